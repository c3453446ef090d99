"""Host-side augmentation of whole batches, with stateless randomness.

Every random number comes from `tf.random.stateless_uniform` keyed on
(seed, batch index), so example j of batch b is augmented the same way in
every run and after every resume: the augmentation is a function of the
example's position in the stream, never of how many batches a process drew
before (which a stateful tf.random op would make it).

Flips and whole-pixel shifts (with reflected borders: the usual
pad-and-random-crop augmentation without black bars) are exact: one gather
of rows and one of columns, on the uint8 pixels. Rotation resamples
(bilinear) and is only computed when asked for.
"""

import math

import tensorflow as tf

_PHILOX = tf.random.Algorithm.PHILOX


def augment_batch(images: tf.Tensor, seed: tf.Tensor, *, random_flip: bool,
                  vertical_flip: bool, translate: float,
                  rotate: float) -> tf.Tensor:
  """Randomly flips, shifts and rotates each image of a batch.

  Args:
    images: [B, H, W, C] of any dtype.
    seed: [2] int64 key of this batch, e.g. (stream seed, batch index).
    random_flip: mirror left-right with probability 1/2.
    vertical_flip: mirror top-bottom with probability 1/2.
    translate: shift by up to this fraction of the side, in whole pixels.
    rotate: rotate by up to this many degrees.

  Returns:
    [B, H, W, C] float32, the augmented batch (same values as `images`
    where nothing moved).
  """
  batch, height, width = (tf.shape(images)[i] for i in range(3))
  draws = tf.random.stateless_uniform([batch, 5], seed=seed, alg=_PHILOX)
  rows = tf.broadcast_to(tf.range(height)[None], [batch, height])
  cols = tf.broadcast_to(tf.range(width)[None], [batch, width])
  if translate:
    rows = _reflect(rows - _shift(draws[:, 0], translate, height), height)
    cols = _reflect(cols - _shift(draws[:, 1], translate, width), width)
  if vertical_flip:
    rows = tf.where(draws[:, 2:3] < 0.5, height - 1 - rows, rows)
  if random_flip:
    cols = tf.where(draws[:, 3:4] < 0.5, width - 1 - cols, cols)
  if translate or vertical_flip:
    images = tf.gather(images, rows, axis=1, batch_dims=1)
  if translate or random_flip:
    images = tf.gather(images, cols, axis=2, batch_dims=1)
  images = tf.cast(images, tf.float32)
  if rotate:
    images = _rotate(images, (2 * draws[:, 4] - 1) * (rotate * math.pi / 180))
  return images


def _shift(uniform, fraction, size):
  """Whole-pixel shifts in [-fraction * size, fraction * size]."""
  limit = fraction * tf.cast(size, tf.float32)
  return tf.cast(tf.round((2 * uniform - 1) * limit), tf.int32)[:, None]


def _reflect(index, size):
  """Maps indices in (-size, 2 * size - 1) into [0, size) by mirroring
  about the edge pixels (d c b | a b c d | c b a)."""
  last = size - 1
  return last - tf.abs(last - tf.abs(index))


def _rotate(images, angle):
  """Rotates each image about its centre by `angle` [B] radians."""
  height = tf.cast(tf.shape(images)[1], tf.float32)
  width = tf.cast(tf.shape(images)[2], tf.float32)
  cos, sin = tf.cos(angle), tf.sin(angle)
  center_x, center_y = (width - 1) / 2, (height - 1) / 2
  # The transform maps each output pixel to the input pixel it samples:
  # input = rotate(-angle) @ (output - center) + center.
  zeros = tf.zeros_like(angle)
  transforms = tf.stack([
      cos, sin, center_x - cos * center_x - sin * center_y,
      -sin, cos, center_y + sin * center_x - cos * center_y,
      zeros, zeros], axis=1)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms,
      output_shape=tf.shape(images)[1:3], fill_value=0.0,
      interpolation='BILINEAR', fill_mode='REFLECT')
