"""Projecting a photo into a generator: the latent whose image matches it.

  target = ...                  # float32 [H, W, 3] in [-1, 1]
  result = project(render, target, latent_dim, key, ProjectionSettings(),
                   inception_params=metrics.find_weights().params)
  result.latent, result.image, result.losses

The search is Adam on z. It starts from the best of `candidates` random
latents and minimizes a perceptual distance (the FID Inception's feature
maps, unit-normalized per position as LPIPS does, without LPIPS's learned
weights: those need a download) plus pixel MSE, plus a small pull of |z|
towards the norm Gaussian latents have (sqrt(d)), which keeps z where the
generator was trained.
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image

from facegan_jax import scoring
from facegan_jax import train_step as train_step_lib
from facegan_jax.metrics import inception

# Mid-level maps: spatial detail (35x35, 17x17) with semantic content.
PERCEPTUAL_LAYERS = ('Mixed_5d', 'Mixed_6e')


@dataclasses.dataclass(frozen=True)
class ProjectionSettings:
  """How the search runs (defaults: a good fit at 32-64 px in minutes)."""
  steps: int = 300
  learning_rate: float = 0.05
  candidates: int = 64  # Random latents tried before Adam; the best starts.
  perceptual_weight: float = 1.0  # 0 skips the Inception (pixels only).
  perceptual_size: int = inception.INPUT_SIZE  # Side fed to the Inception.
  pixel_weight: float = 1.0
  norm_weight: float = 1e-3  # (|z| / sqrt(d) - 1)^2
  snapshots: int = 8  # Images kept along the way, for the progress strip.


@dataclasses.dataclass(frozen=True)
class Projection:
  """Result of `project`.

  Attributes:
    latent: float32 [d], the best z found.
    image: float32 [H, W, 3] in [-1, 1], its image.
    losses: total loss per step (before that step's update).
    snapshots: float32 [S, H, W, 3] images along the search, last = image.
    snapshot_steps: the step of each snapshot.
  """
  latent: np.ndarray
  image: np.ndarray
  losses: np.ndarray
  snapshots: np.ndarray
  snapshot_steps: tuple[int, ...]


def _inception_input(images: jax.Array, size: int) -> jax.Array:
  """[-1, 1] images -> Inception input, differentiably (no quantization)."""
  pixels = images.astype(jnp.float32) * 127.5 + 127.5
  return (inception.tf1_bilinear_resize(pixels, size) - 128.0) / 128.0


def perceptual_features(params: dict, images: jax.Array,
                        input_size: int = inception.INPUT_SIZE,
                        layers: Sequence[str] = PERCEPTUAL_LAYERS
                        ) -> list[jax.Array]:
  """The Inception's feature maps of images [B, H, W, 3] in [-1, 1].

  Each position's feature vector is scaled to unit length (as LPIPS does),
  so every position of every layer weighs the same.

  Args:
    params: FID Inception parameters (`metrics.find_weights().params`).
    images: float [B, H, W, 3] in [-1, 1].
    input_size: side the images are resized to (299: the network's own).
    layers: module names of the Inception blocks whose outputs are used.

  Returns:
    One [B, h, w, C] map per layer.
  """
  wanted = set(layers)
  _, state = inception.FIDInceptionV3(with_logits=False).apply(
      {'params': params}, _inception_input(images, input_size),
      capture_intermediates=lambda module, _: module.name in wanted)
  maps = [state['intermediates'][name]['__call__'][0] for name in layers]
  return [m / jnp.sqrt(jnp.sum(m**2, -1, keepdims=True) + 1e-10)
          for m in maps]


def perceptual_distance(features_a: Sequence[jax.Array],
                        features_b: Sequence[jax.Array]) -> jax.Array:
  """[B] distances of two images' `perceptual_features`: per layer, the
  squared difference summed over channels, averaged over positions; summed
  over layers. 0 for equal images, at most 4 per layer."""
  return sum(jnp.mean(jnp.sum((a - b)**2, -1), axis=(1, 2))
             for a, b in zip(features_a, features_b))


def render_fn(config: ml_collections.ConfigDict,
              program: train_step_lib.Program, state: Any,
              use_ema: bool = True, labels: np.ndarray | None = None
              ) -> Callable[[jax.Array], jax.Array]:
  """z [B, d] -> the run's images [B, H, W, 3] as float32 in [-1, 1].

  A conditional run's images all take `labels`, one 0/1 vector [A]: the
  search then looks for the face among those with these attributes.
  """
  offset, scale = scoring.pixel_normalization(config.dataset)
  variables = state.generator_variables(use_ema)

  def render(z):
    batch_labels = None if labels is None else jnp.broadcast_to(
        jnp.asarray(labels, jnp.float32), (z.shape[0], len(labels)))
    images = program.sample(*variables, z,
                            labels=batch_labels).astype(jnp.float32)
    return (images / scale + offset - 127.5) / 127.5  # Undo standardize.
  return render


def load_photo(config: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """A photo as the run's training images were made: uint8 [R, R, 3]."""
  from input_pipeline import image_files  # pylint: disable=g-import-not-at-top
  dataset = config.dataset
  size, crop, resample = dataset.resolution, 'center', 'lanczos'
  if dataset.source == 'folder':
    from input_pipeline import prepare  # pylint: disable=g-import-not-at-top
    manifest = prepare.read_manifest(dataset.path)
    size, crop = manifest['resolution'], manifest['crop']
    resample = manifest.get('filter') or resample
  elif dataset.source == 'tfds':
    crop, resample = dataset.crop, 'bilinear'
  image, reason, _ = image_files.load_image(path, size, crop, resample)
  if image is None:
    raise ValueError(f'{path} cannot be read as an image '
                     f'({reason}); pass a JPEG or PNG photo.')
  if size != dataset.resolution:  # The pipeline's area resize.
    image = np.asarray(Image.fromarray(image).resize(
        (dataset.resolution,) * 2, Image.Resampling.BOX))
  return image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """Peak signal-to-noise ratio in dB of two images in [-1, 1] (peak 2)."""
  mse = float(np.mean((np.asarray(a, np.float64) - b)**2))
  return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def project(render: Callable[[jax.Array], jax.Array], target: np.ndarray,
            latent_dim: int, key: jax.Array,
            settings: ProjectionSettings = ProjectionSettings(),
            inception_params: dict | None = None,
            progress: Callable[[int, float], None] | None = None
            ) -> Projection:
  """Finds the latent whose image best matches `target`.

  Args:
    render: z [B, d] -> images [B, H, W, 3] in [-1, 1], differentiable.
    target: [H, W, 3] in [-1, 1].
    latent_dim: d.
    key: draws the candidate latents.
    settings: see ProjectionSettings.
    inception_params: FID Inception parameters for the perceptual loss
      (`metrics.find_weights().params`); None = pixel loss only.
    progress: called as progress(step, loss) after each step.

  Returns:
    A Projection.
  """
  s = settings
  use_perceptual = inception_params is not None and s.perceptual_weight > 0
  # The target and the Inception weights are arguments of the compiled
  # functions, not constants: XLA would otherwise constant-fold the
  # Inception on the target, for minutes.
  target = jnp.asarray(target, jnp.float32)[None]
  features = functools.partial(perceptual_features,
                               input_size=s.perceptual_size)
  data = (target, jax.jit(features)(inception_params, target)
          if use_perceptual else None, inception_params)

  def losses(z, data):
    """[B] losses of z [B, d]."""
    target, target_features, params = data
    images = render(z)
    loss = s.pixel_weight * jnp.mean((images - target)**2, axis=(1, 2, 3))
    if use_perceptual:
      loss += s.perceptual_weight * perceptual_distance(
          features(params, images), target_features)
    norm = jnp.linalg.norm(z, axis=-1) / math.sqrt(latent_dim)
    return loss + s.norm_weight * (norm - 1)**2

  # The candidates, one at a time: one compiled shape ([1, d]) for all.
  loss_of_one = jax.jit(lambda z, data: losses(z, data)[0])
  candidates = jax.random.normal(key, (max(s.candidates, 1), latent_dim))
  scores = [float(loss_of_one(z[None], data)) for z in candidates]
  z = candidates[int(np.argmin(scores))][None]

  optimizer = optax.adam(s.learning_rate)

  @jax.jit
  def update(z, opt_state, data):
    loss, grad = jax.value_and_grad(loss_of_one)(z, data)
    updates, opt_state = optimizer.update(grad, opt_state)
    return optax.apply_updates(z, updates), opt_state, loss

  render_jit = jax.jit(render)
  snapshot_at = sorted(set(np.linspace(0, s.steps, max(s.snapshots, 2))
                           .round().astype(int).tolist()))
  opt_state = optimizer.init(z)
  best_z, best_loss = z, math.inf
  loss_log, snapshots = [], []
  for step in range(s.steps + 1):
    if step in snapshot_at:
      snapshots.append(np.asarray(render_jit(z))[0])
    if step == s.steps:
      break
    new_z, opt_state, loss = update(z, opt_state, data)
    loss = float(loss)  # The loss of z, before this update.
    loss_log.append(loss)
    if loss < best_loss:
      best_z, best_loss = z, loss
    z = new_z
    if progress:
      progress(step + 1, loss)
  final_loss = float(loss_of_one(z, data))
  if final_loss < best_loss:
    best_z = z
  image = np.asarray(render_jit(best_z))[0]
  snapshots[-1] = image
  return Projection(latent=np.asarray(best_z)[0], image=image,
                    losses=np.asarray(loss_log, np.float32),
                    snapshots=np.stack(snapshots),
                    snapshot_steps=tuple(snapshot_at))
