"""DiffAugment: differentiable augmentation of critic inputs, on device.

Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training"
(NeurIPS 2020). The train step augments real and fake images alike before
the critic sees them; because every operation is differentiable in the
images, the generator's gradient flows through the augmentation.

Pure JAX (no TensorFlow, no host work): safe inside jax.jit on any device.
Images are [B, H, W, C] in [-1, 1]; all randomness comes from `rng`.
"""

from typing import Callable

import jax
import jax.numpy as jnp

# As in the paper: translate by up to 1/8 of the side, cut out half of it.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _brightness(images, rng):
  shift = jax.random.uniform(rng, (images.shape[0], 1, 1, 1), images.dtype,
                             -0.5, 0.5)
  return images + shift


def _saturation(images, rng):
  scale = jax.random.uniform(rng, (images.shape[0], 1, 1, 1), images.dtype,
                             0.0, 2.0)
  mean = images.mean(axis=3, keepdims=True)
  return (images - mean) * scale + mean


def _contrast(images, rng):
  scale = jax.random.uniform(rng, (images.shape[0], 1, 1, 1), images.dtype,
                             0.5, 1.5)
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  return (images - mean) * scale + mean


def _flip(images, rng):
  """Mirrors each image left-right with probability 1/2."""
  flipped = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flipped, images[:, :, ::-1], images)


def _translation(images, rng):
  """Shifts each image by whole pixels, filling with zeros."""
  batch, height, width, _ = images.shape
  max_y = int(height * TRANSLATION_RATIO + 0.5)
  max_x = int(width * TRANSLATION_RATIO + 0.5)
  rng_y, rng_x = jax.random.split(rng)
  shift_y = jax.random.randint(rng_y, (batch, 1), -max_y, max_y + 1)
  shift_x = jax.random.randint(rng_x, (batch, 1), -max_x, max_x + 1)
  # Index into a copy padded by one zero pixel; out-of-range -> padding.
  rows = jnp.clip(jnp.arange(height)[None] - shift_y + 1, 0, height + 1)
  cols = jnp.clip(jnp.arange(width)[None] - shift_x + 1, 0, width + 1)
  padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jax.vmap(lambda image, r, c: image[r][:, c])(padded, rows, cols)


def _cutout(images, rng):
  """Zeroes one square of half the side per image, at a random place."""
  batch, height, width, _ = images.shape
  size_y = int(height * CUTOUT_RATIO + 0.5)
  size_x = int(width * CUTOUT_RATIO + 0.5)
  rng_y, rng_x = jax.random.split(rng)
  # Top-left corners; the square may hang over the border, as in the paper.
  top = jax.random.randint(rng_y, (batch, 1, 1), 0,
                           height + (1 - size_y % 2)) - size_y // 2
  left = jax.random.randint(rng_x, (batch, 1, 1), 0,
                            width + (1 - size_x % 2)) - size_x // 2
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  inside = ((rows >= top) & (rows < top + size_y) & (cols >= left) &
            (cols < left + size_x))
  return images * (~inside)[..., None].astype(images.dtype)


AUGMENTATIONS: dict[str, tuple[Callable, ...]] = {
    'color': (_brightness, _saturation, _contrast),
    'translation': (_translation,),
    'cutout': (_cutout,),
    'flip': (_flip,),  # Not in the paper; consistency regularization's.
}


def parse_policy(policy: str) -> tuple[str, ...]:
  """'color,translation' -> ('color', 'translation'); ValueError if unknown."""
  names = tuple(name.strip() for name in policy.split(',') if name.strip())
  unknown = [name for name in names if name not in AUGMENTATIONS]
  if unknown:
    raise ValueError(
        f'Unknown DiffAugment policy {", ".join(unknown)} in {policy!r}; '
        f'combine any of: {", ".join(AUGMENTATIONS)} (comma-separated), '
        f"or '' for none.")
  return names


def diff_augment(images: jax.Array, rng: jax.Array, policy: str) -> jax.Array:
  """Applies the DiffAugment `policy` to a batch.

  Args:
    images: [B, H, W, C] float images in [-1, 1].
    rng: a jax.random key; the same key gives the same augmentation.
    policy: comma-separated subset of 'color', 'translation', 'cutout',
      'flip', in the order to apply them; '' returns `images` unchanged.

  Returns:
    [B, H, W, C] augmented images, differentiable w.r.t. `images`.
  """
  for name in parse_policy(policy):
    for augmentation in AUGMENTATIONS[name]:
      rng, key = jax.random.split(rng)
      images = augmentation(images, key)
  return images
