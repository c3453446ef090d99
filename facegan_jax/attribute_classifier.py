"""A small CNN that reads binary face attributes (Smiling, Male, ...).

  classifier, report = train_classifier(images, labels, names, steps=1500)
  probabilities = predict_probabilities(classifier, generated_images)
  save(classifier, 'classifier/', report)
  classifier, description = load('classifier/')

It judges generated faces: which attributes a sample shows (to fit latent
directions, `facegan_jax.directions`) and whether a conditional generator
draws what it was asked for. Its own held-out accuracy is the ceiling of
both measurements, so `train_classifier` reports it beside the accuracy of
always predicting each attribute's more common value: an attribute the
classifier reads no better than that baseline says nothing about samples.

Images are uint8 [N, R, R, 3]; the network sees them in [-1, 1], as the
generators draw them. jax/flax/optax/numpy only (no TensorFlow).
"""

from collections.abc import Callable, Sequence
import dataclasses
import functools
import json
import os
import time
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

CONFIG_FILE = 'classifier.json'
WEIGHTS_FILE = 'weights.msgpack'
FORMAT = 'facegan-attribute-classifier-v1'
WIDTHS = (32, 64, 128)
# About 10 epochs of 9,000 images at batch 64: 30 s on 2 CPU cores at 32x32,
# 3 minutes at 64x64. Longer overfits: on 10,000 CelebA images at 32x32 the
# mean held-out accuracy is 0.884 after 1500 steps, 0.879 after 3000 (0.806
# for the majority baseline).
DEFAULT_STEPS = 1500
PREDICT_BATCH = 256


class AttributeCNN(nn.Module):
  """Stride-2 3x3 convolutions, then one dense layer to A logits.

  The last feature map is flattened rather than pooled: where a feature is
  (mouth, hair, top of the head) is much of what an attribute is.
  """
  num_attributes: int
  widths: Sequence[int] = WIDTHS

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images [B, R, R, 3] in [-1, 1] -> logits [B, A]."""
    x = images
    for width in self.widths:
      x = nn.leaky_relu(nn.Conv(width, (3, 3), strides=2)(x), 0.2)
    return nn.Dense(self.num_attributes)(x.reshape(x.shape[0], -1))


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A trained classifier.

  Attributes:
    names: the attributes, in the order of the logits.
    resolution: side R of the images it reads.
    widths: channels of its convolutions.
    params: the network's parameters.
  """
  names: tuple[str, ...]
  resolution: int
  widths: tuple[int, ...]
  params: Any

  @property
  def module(self) -> AttributeCNN:
    return AttributeCNN(len(self.names), self.widths)


def to_inputs(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [-1, 1] (works on traced values)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def downscale(images: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 [N, R, R, 3] -> [N, resolution, resolution, 3] by block means.

  Area averaging, as the input pipeline resizes prepared images; R must be
  a multiple of `resolution` (powers of two always are).

  Raises:
    ValueError: an upscale or a non-integer factor (says what to do).
  """
  size = images.shape[1]
  if size == resolution:
    return images
  if resolution < 1 or size < resolution or size % resolution:
    raise ValueError(
        f'Cannot bring {size}x{size} images to {resolution}x{resolution} '
        'without inventing detail; use images at least that large, at a '
        'multiple of it (prepare the data, or train the classifier, at the '
        'resolution the images will have).')
  factor = size // resolution
  blocks = images.reshape(images.shape[0], resolution, factor, resolution,
                          factor, 3).astype(np.float32)
  return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)


def split_indices(num: int, heldout_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, held-out) example indices, each sorted; the same for a seed.

  The held-out examples are the last round(num * heldout_fraction) of a
  permutation drawn with numpy's default_rng(seed).

  Raises:
    ValueError: either part would be empty.
  """
  num_heldout = int(round(num * heldout_fraction))
  if not 0 < heldout_fraction < 1 or not 0 < num_heldout < num:
    raise ValueError(
        f'heldout_fraction={heldout_fraction} of {num} examples leaves '
        f'{num_heldout} held out and {num - num_heldout} to train on; both '
        'need at least one (use 0 < heldout_fraction < 1 and more images).')
  order = np.random.default_rng(seed).permutation(num)
  return np.sort(order[:num - num_heldout]), np.sort(order[num - num_heldout:])


def _check_data(images: np.ndarray, labels: np.ndarray,
                names: Sequence[str]) -> None:
  if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3
      or images.shape[1] != images.shape[2]):
    raise ValueError(f'Expected uint8 images [N, R, R, 3], got '
                     f'{images.dtype} {images.shape}.')
  if labels.shape != (len(images), len(names)):
    raise ValueError(f'Expected labels [{len(images)}, {len(names)}] (one '
                     f'0/1 value per image and attribute), got {labels.shape}.')
  if not np.isin(labels, (0, 1)).all():
    raise ValueError('Labels must be 0 or 1.')


def _make_train_step(module: AttributeCNN,
                     optimizer: optax.GradientTransformation):
  """Jitted (params, opt_state, images uint8, labels) -> (params, opt, loss)."""

  def loss_fn(params, images, labels):
    logits = module.apply({'params': params}, to_inputs(images))
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

  @jax.jit
  def train_step(params, opt_state, images, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return train_step


def _batches(indices: np.ndarray, batch_size: int, steps: int, seed: int):
  """`steps` shuffled batches of `indices`, epoch after epoch.

  An epoch's last partial batch is dropped: no batch holds an example twice.
  """
  rng = np.random.default_rng([seed, 1])
  order = np.empty(0, np.int64)
  for _ in range(steps):
    if len(order) < batch_size:
      order = rng.permutation(indices)
    yield order[:batch_size]
    order = order[batch_size:]


def _mirrored(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A random half of `images` flipped left-right (a copy)."""
  flip = rng.random(len(images)) < 0.5
  return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def _fit(module: AttributeCNN, images: np.ndarray, labels: np.ndarray,
         train: np.ndarray, settings: dict[str, Any],
         progress: Callable[[int, float], None] | None) -> tuple[Any, float]:
  """Adam on the mean sigmoid cross-entropy; (params, last loss)."""
  resolution, seed = images.shape[1], settings['seed']
  params = module.init(jax.random.PRNGKey(seed), jnp.zeros(
      (1, resolution, resolution, 3)))['params']
  optimizer = optax.adam(settings['learning_rate'])
  opt_state = optimizer.init(params)
  train_step = _make_train_step(module, optimizer)
  batch_size = min(settings['batch_size'], len(train))
  flip_rng = np.random.default_rng([seed, 2])
  loss = float('nan')
  for step, batch in enumerate(
      _batches(train, batch_size, settings['steps'], seed), 1):
    batch_images = images[batch]
    if settings['flip']:
      batch_images = _mirrored(batch_images, flip_rng)
    params, opt_state, loss = train_step(
        params, opt_state, batch_images, labels[batch].astype(np.float32))
    if progress is not None:
      progress(step, loss)
  return params, float(loss)


def train_classifier(images: np.ndarray, labels: np.ndarray,
                     names: Sequence[str], *, steps: int = DEFAULT_STEPS,
                     batch_size: int = 64, learning_rate: float = 1e-3,
                     seed: int = 0, heldout_fraction: float = 0.1,
                     widths: Sequence[int] = WIDTHS, flip: bool = True,
                     progress: Callable[[int, float], None] | None = None
                     ) -> tuple[Classifier, dict[str, Any]]:
  """Trains on all but a held-out part of the examples, then scores that part.

  Args:
    images: uint8 [N, R, R, 3].
    labels: [N, A] of 0/1.
    names: the A attribute names.
    steps: Adam updates.
    batch_size: examples per update.
    learning_rate: Adam's.
    seed: initialization, batch order and the held-out split.
    heldout_fraction: share of the examples held out (see `split_indices`).
    widths: channels of the convolutions.
    flip: mirror a random half of each batch left-right: face attributes
      survive a mirror, and it curbs overfitting (CelebA 10k at 32x32:
      mean held-out accuracy 0.884 with it, 0.876 without).
    progress: called as progress(step, loss) after each update; `loss` is a
      device scalar (converting it waits for the update).

  Returns:
    (classifier, report): the report holds `accuracy_report`'s accuracies,
    num_train, num_heldout, final_loss, train_seconds and the settings.
  """
  images, labels, names = np.asarray(images), np.asarray(labels), tuple(names)
  _check_data(images, labels, names)
  if steps < 1 or batch_size < 1:
    raise ValueError(f'steps={steps}, batch_size={batch_size}: both must be '
                     'at least 1.')
  train, heldout = split_indices(len(images), heldout_fraction, seed)
  module = AttributeCNN(len(names), tuple(widths))
  settings = dict(steps=steps, batch_size=batch_size,
                  learning_rate=learning_rate, seed=seed,
                  heldout_fraction=heldout_fraction, widths=list(widths),
                  flip=flip)
  started = time.perf_counter()
  params, final_loss = _fit(module, images, labels, train, settings, progress)
  classifier = Classifier(names, images.shape[1], tuple(widths), params)
  report = accuracy_report(classifier, images[heldout], labels[heldout],
                           labels[train])
  report.update(
      num_train=len(train), num_heldout=len(heldout), final_loss=final_loss,
      train_seconds=round(time.perf_counter() - started, 1),
      settings=settings)
  return classifier, report


def accuracy_report(classifier: Classifier, images: np.ndarray,
                    labels: np.ndarray,
                    train_labels: np.ndarray) -> dict[str, Any]:
  """Accuracy on held-out examples, beside the majority-class baseline.

  Args:
    classifier: the trained classifier.
    images: held-out uint8 [M, R, R, 3].
    labels: their [M, A] 0/1 labels.
    train_labels: [N, A] labels the classifier was trained on; each
      attribute's more common value there is the baseline's constant answer.

  Returns:
    {'heldout_accuracy': {name: fraction right}, 'baseline_accuracy':
    {name: fraction right when always answering the training majority},
    'mean_accuracy', 'mean_baseline_accuracy', 'positive_fraction':
    {name: share of training examples that have it}}.
  """
  predicted = predict_probabilities(classifier, images) > 0.5
  accuracy = (predicted == labels.astype(bool)).mean(axis=0)
  positive = np.asarray(train_labels).mean(axis=0)
  baseline = (labels == (positive >= 0.5)).mean(axis=0)
  names = classifier.names
  as_dict = lambda values: {n: round(float(v), 4) for n, v in zip(names,
                                                                   values)}
  return {'heldout_accuracy': as_dict(accuracy),
          'baseline_accuracy': as_dict(baseline),
          'mean_accuracy': round(float(accuracy.mean()), 4),
          'mean_baseline_accuracy': round(float(baseline.mean()), 4),
          'positive_fraction': as_dict(positive)}


@functools.lru_cache(maxsize=None)
def _predict_fn(num_attributes: int, widths: tuple[int, ...]):
  module = AttributeCNN(num_attributes, widths)
  return jax.jit(lambda params, images: jax.nn.sigmoid(
      module.apply({'params': params}, to_inputs(images))))


def predict_probabilities(classifier: Classifier, images: np.ndarray,
                          batch_size: int = PREDICT_BATCH) -> np.ndarray:
  """P(attribute) of each image: float32 [N, A].

  Args:
    classifier: the trained classifier.
    images: uint8 [N, R, R, 3] at the classifier's resolution (see
      `downscale`).
    batch_size: images per call; every call has this size (one compilation),
      so the probabilities do not depend on it.
  """
  images = np.asarray(images)
  size = classifier.resolution
  if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
    raise ValueError(f'The classifier reads uint8 [N, {size}, {size}, 3] '
                     f'images; got {images.dtype} {images.shape}.')
  predict = _predict_fn(len(classifier.names), classifier.widths)
  batch_size = max(1, min(batch_size, len(images)))
  outputs = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    padded = np.zeros((batch_size, size, size, 3), np.uint8)
    padded[:len(batch)] = batch
    outputs.append(np.asarray(predict(classifier.params, padded))[:len(batch)])
  if not outputs:
    return np.zeros((0, len(classifier.names)), np.float32)
  return np.concatenate(outputs).astype(np.float32)


def save(classifier: Classifier, out_dir: str,
         report: dict[str, Any] | None = None) -> None:
  """Writes weights.msgpack and classifier.json (names, resolution, report).

  classifier.json is written last: a folder with it is complete.
  """
  os.makedirs(out_dir, exist_ok=True)
  weights = flax.serialization.msgpack_serialize(
      jax.tree_util.tree_map(np.asarray, classifier.params))
  with open(os.path.join(out_dir, WEIGHTS_FILE), 'wb') as stream:
    stream.write(weights)
  description = {'format': FORMAT, 'names': list(classifier.names),
                 'resolution': classifier.resolution,
                 'widths': list(classifier.widths), 'report': report or {}}
  temporary = os.path.join(out_dir, CONFIG_FILE + '.tmp')
  with open(temporary, 'w') as stream:
    json.dump(description, stream, indent=1)
  os.replace(temporary, os.path.join(out_dir, CONFIG_FILE))


def read_description(path: str) -> dict[str, Any]:
  """The classifier.json of a saved classifier; ValueError saying what to do."""
  file = os.path.join(os.path.expanduser(path), CONFIG_FILE)
  if not os.path.isfile(file):
    raise ValueError(
        f'{file} does not exist: {path!r} is not a trained attribute '
        'classifier. Train one with\n  python -m facegan_jax.attributes '
        f'train --data=PREPARED_WITH_LABELS --out={path}')
  with open(file) as stream:
    description = json.load(stream)
  if description.get('format') != FORMAT:
    raise ValueError(f'{file} has format {description.get("format")!r}, not '
                     f'{FORMAT!r}: train the classifier again.')
  return description


def load(path: str) -> tuple[Classifier, dict[str, Any]]:
  """(classifier, its classifier.json) from a folder written by `save`."""
  description = read_description(path)
  with open(os.path.join(os.path.expanduser(path), WEIGHTS_FILE), 'rb') as f:
    params = flax.serialization.msgpack_restore(f.read())
  classifier = Classifier(tuple(description['names']),
                          description['resolution'],
                          tuple(description['widths']),
                          jax.tree_util.tree_map(jnp.asarray, params))
  return classifier, description
