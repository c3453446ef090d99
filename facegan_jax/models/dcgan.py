"""DCGAN generator and discriminator (Radford et al. 2016), any 32..256.

At 64x64 with widths 64 these are exactly the models of
shared/bench/torch_wgan_gp_reference.py (and of the WGAN-GP paper's DCGAN
runs):

  G: z -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64x3, batch norm
     + ReLU in the hidden blocks, tanh at the end.
  D: 64x64x3 -> 32x32x64 -> 16x16x128 -> 8x8x256 -> 4x4x512 (4x4 stride-2
     pad-1 convs, LeakyReLU 0.2) -> 4x4 'VALID' conv -> one score.

Other resolutions add or drop 2x blocks at the high-resolution end. Channel
counts double per block away from the image and stop at 8 * width (512 at
width 64): at 256x256 the generator has 12.2M parameters (3.8M at 64x64)
instead of the 49M that doubling all the way would give.

Mapping from the PyTorch reference: G's first layer, ConvTranspose2d(Z, C,
4, 1, 0) on a 1x1 input, is a dense layer: torch weight w [Z, C, 4, 4] is
Dense kernel w.transpose(0, 2, 3, 1).reshape(Z, 16 * C). The stride-2 up
convs map as `upsample.py` explains; Conv2d weight [Cout, Cin, kh, kw] is
kernel w.transpose(2, 3, 1, 0).

Initialization is the DCGAN paper's N(0, 0.02) for every kernel.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facegan_jax import conditioning
from facegan_jax.models import conv as conv_lib
from facegan_jax.models import minibatch_stddev
from facegan_jax.models import normalization
from facegan_jax.models import upsample

Array = jax.Array

_KERNEL_INIT = nn.initializers.normal(0.02)
# Channels stop doubling at this multiple of the width (8: 64 -> 512).
MAX_WIDTH_MULTIPLIER = 8


def num_blocks(resolution: int) -> int:
  """Number of 2x resampling blocks between 4x4 and resolution."""
  return int(math.log2(resolution)) - 2


def generator_channels(resolution: int, width: int) -> list[int]:
  """Channels at 4x4, 8x8, ..., resolution/2: [512, 256, 128, 64] at 64."""
  n = num_blocks(resolution)
  return [width * min(2 ** (n - 1 - i), MAX_WIDTH_MULTIPLIER)
          for i in range(n)]


def parse_channels(text: str, resolution: int) -> tuple[int, ...]:
  """'384,256,160' -> (384, 256, 160): one count per generator block.

  Raises:
    ValueError: saying what model.g_channels needs, if `text` does not give
      num_blocks(resolution) positive integers.
  """
  n = num_blocks(resolution)
  example = ','.join(map(str, generator_channels(resolution, 64)))
  try:
    channels = tuple(int(part) for part in str(text).split(','))
  except ValueError:
    channels = ()
  if len(channels) != n or min(channels) < 1:
    raise ValueError(
        f'model.g_channels={text!r} must be {n} positive integers separated '
        f'by commas at resolution {resolution} (the channels at 4x4, 8x8, '
        f'..., {resolution // 2}x{resolution // 2}; width 64 is '
        f"'{example}'), or '' to derive them from model.g_width.")
  return channels


def discriminator_channels(resolution: int, width: int) -> list[int]:
  """Channels at resolution/2, ..., 4x4: [64, 128, 256, 512] at 64."""
  return [width * min(2 ** i, MAX_WIDTH_MULTIPLIER)
          for i in range(num_blocks(resolution))]


class DCGANGenerator(nn.Module):
  """z [B, latent_dim] -> images [B, R, R, 3] float32 in [-1, 1].

  Attributes:
    resolution: R, a power of two >= 8.
    width: channels of the last hidden block (at R/2).
    channels: if given, the channels of every hidden block, at 4x4, ...,
      R/2 (see parse_channels), instead of those derived from `width`
      (a block's multiply-adds are its input channels times its output
      channels times its output pixels, so widths per block set the cost).
    norm: 'batch', 'self_modulated' (batch norm whose scale and shift are
      functions of the input, see normalization.SelfModulatedBatchNorm) or
      'none' (then every layer has a bias).
    full_resolution_block: one more hidden block, at R x R with half the
      channels of the block before it, and the image from it by a 3x3
      convolution (the CNN generator of Miyato et al. 2018), instead of the
      last transposed convolution making the image from R/2 x R/2 features
      directly.
    upsampling: 'transposed' (4x4 stride-2 transposed convolutions, DCGAN's)
      or 'nearest' (nearest-neighbour x2 upsampling, then a 3x3 convolution:
      no checkerboard pattern by construction, Odena et al. 2016; 9 weights
      per channel pair instead of 16, and 9/16 of the multiply-adds).
    conv_impl: 'fast' or 'xla' (see upsample.ConvTranspose).
    precision: of the convolutions' matmuls (conv.BF16_INPUTS: bfloat16
      operands, float32 sums).
    dtype: compute dtype; parameters stay float32.
  """
  resolution: int = 64
  width: int = 64
  channels: tuple[int, ...] = ()
  norm: str = 'batch'
  full_resolution_block: bool = False
  upsampling: str = 'transposed'
  conv_impl: str = 'fast'
  precision: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: Array, *, train: bool) -> Array:
    """Generates images; `train` selects batch statistics (see normalize)."""
    channels = list(self.channels or
                    generator_channels(self.resolution, self.width))
    # A bias right before batch norm is cancelled by its mean subtraction.
    use_bias = self.norm == 'none'
    x = nn.Dense(16 * channels[0], use_bias=use_bias, dtype=self.dtype,
                 kernel_init=_KERNEL_INIT, name='project')(z)
    x = x.reshape(z.shape[0], 4, 4, channels[0])
    x = nn.relu(normalization.normalize(x, self.norm, train, self.dtype,
                                        name='project_norm', latent=z))
    if self.full_resolution_block:
      channels = [*channels, max(channels[-1] // 2, 1)]
    for i, features in enumerate(channels[1:]):
      x = self._upsample(features, use_bias, f'up_{i}')(x)
      x = nn.relu(normalization.normalize(x, self.norm, train, self.dtype,
                                          name=f'up_{i}_norm', latent=z))
    # With the full-resolution block the image comes from R x R features by
    # a 3x3 stride-1 'SAME' transposed convolution: the 'SAME' 3x3
    # convolution (kernel not flipped), and its GEMM + col2im form is the
    # fast one for 3 output channels on XLA:CPU (im2col: 1.4x the step).
    if self.full_resolution_block:
      to_rgb = upsample.ConvTranspose(3, (3, 3), (1, 1), impl=self.conv_impl,
                                      dtype=self.dtype,
                                      precision=self.precision,
                                      kernel_init=_KERNEL_INIT, name='to_rgb')
    else:
      to_rgb = self._upsample(3, True, 'to_rgb')
    return jnp.tanh(to_rgb(x).astype(jnp.float32))

  def _upsample(self, features: int, use_bias: bool, name: str) -> nn.Module:
    """A 2x upsampling layer to `features` channels, as `upsampling` says."""
    common = dict(use_bias=use_bias, impl=self.conv_impl, dtype=self.dtype,
                  precision=self.precision, kernel_init=_KERNEL_INIT,
                  name=name)
    if self.upsampling == 'nearest':
      return upsample.UpsampleConv(features, (3, 3), **common)
    return upsample.ConvTranspose(features, (4, 4), (2, 2), **common)


class DCGANDiscriminator(nn.Module):
  """images [B, R, R, 3] -> scores [B] float32 (logits / critic values).

  Attributes:
    resolution: R, a power of two >= 8.
    width: channels of the first block (at R/2).
    norm: 'none', 'layer' or 'batch', applied after every conv but the
      first (as DCGAN does; the image-level block keeps its raw statistics).
    spectral_norm: spectral normalization of every conv.
    minibatch_stddev_group: if > 0, the 4x4 features get the minibatch
      standard deviation over groups of this many samples before the score
      (see minibatch_stddev.py).
    conv_impl: 'fast' or 'xla' (see conv.Conv).
    precision: of the convolutions' matmuls (as DCGANGenerator's).
    dtype: compute dtype; parameters stay float32.
  """
  resolution: int = 64
  width: int = 64
  norm: str = 'none'
  spectral_norm: bool = False
  minibatch_stddev_group: int = 0
  conv_impl: str = 'fast'
  precision: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, *,
               train: bool) -> Array:
    """Scores images; `train` updates spectral-norm / batch-norm state.

    labels [B, A] (0/1) adds the projection head of a conditional critic.
    """
    x = x.astype(self.dtype)
    for i, features in enumerate(
        discriminator_channels(self.resolution, self.width)):
      normalized = i > 0 and self.norm != 'none'
      layer = conv_lib.Conv(features, (4, 4), (2, 2), ((1, 1), (1, 1)),
                            use_bias=not normalized, impl=self.conv_impl,
                            dtype=self.dtype, precision=self.precision,
                            kernel_init=_KERNEL_INIT,
                            name=f'down_{i}')
      x = normalization.apply_layer(layer, x, self.spectral_norm, train,
                                    name=f'down_{i}_sn')
      if normalized:
        x = normalization.normalize(x, self.norm, train, self.dtype,
                                    name=f'down_{i}_norm')
      x = nn.leaky_relu(x, 0.2)
    features = x
    if self.minibatch_stddev_group:
      x = minibatch_stddev.append(x, self.minibatch_stddev_group)
    layer = conv_lib.Conv(1, (4, 4), padding='VALID', impl=self.conv_impl,
                          dtype=self.dtype, precision=self.precision,
                          kernel_init=_KERNEL_INIT,
                          name='score')
    scores = normalization.apply_layer(layer, x, self.spectral_norm, train,
                                       name='score_sn')
    return conditioning.with_projection(scores, features, labels, self.dtype)
