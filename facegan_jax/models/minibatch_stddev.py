"""The minibatch standard deviation feature (Karras et al. 2018).

A critic that sees how much a group of samples varies can tell a collapsed
generator (little variation) from the data, which pushes the generator to
cover more of it. StyleGAN2's critic always has it; DCGAN's optionally
(model.d_minibatch_stddev).
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def append(x: Array, group_size: int = 4, num_channels: int = 1) -> Array:
  """Appends the minibatch standard deviation as extra feature maps.

  Samples are split into groups of G = min(group_size, B) consecutive
  samples, channels into `num_channels` groups; each feature's standard
  deviation over the group (sqrt(var + 1e-8)) is averaged over pixels and
  the channel group, and broadcast over the group's samples and pixels.

  Args:
    x: [B, H, W, C]; B divisible by G and C by num_channels.
    group_size: samples per group.
    num_channels: features added.

  Returns:
    [B, H, W, C + num_channels], dtype of x.

  Raises:
    ValueError: if B is not divisible by G or C by num_channels.
  """
  b, h, w, c = x.shape
  group = min(group_size, b)
  if b % group:
    raise ValueError(
        f'The minibatch-stddev layer groups {group} samples, but the batch '
        f'has {b}: use a batch size divisible by {group_size} (or a group '
        'size that divides the batch: model.d_minibatch_stddev for DCGAN).')
  if c % num_channels:
    raise ValueError(f'mbstd_channels={num_channels} must divide the {c} '
                     'channels at 4x4.')
  y = x.astype(jnp.float32).reshape(b // group, group, h, w, num_channels,
                                    c // num_channels)
  variance = jnp.mean(jnp.square(y - jnp.mean(y, axis=1, keepdims=True)),
                      axis=1)
  stddev = jnp.mean(jnp.sqrt(variance + 1e-8), axis=(1, 2, 4))  # [B/G, F]
  stddev = jnp.broadcast_to(stddev[:, None, None, None, :],
                            (b // group, group, h, w, num_channels))
  return jnp.concatenate(
      [x, stddev.reshape(b, h, w, num_channels).astype(x.dtype)], axis=-1)
