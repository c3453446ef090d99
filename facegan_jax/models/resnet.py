"""ResNet generator and critic of the WGAN-GP paper (Gulrajani et al. 2017).

The 64x64 models of the paper's code (GoodGenerator / GoodDiscriminator),
dim = width:

  G: z -> dense 4x4x8dim -> 4 up blocks (8, 4, 2, 1 x dim) -> norm, ReLU,
     3x3 conv to 3 -> tanh.
  D: 3x3 conv to dim -> 4 down blocks (2, 4, 8, 8 x dim) -> dense to 1.

An up block: shortcut = upsample + 1x1 conv; residual = norm, ReLU,
upsample + 3x3 conv, norm, ReLU, 3x3 conv. A down block: shortcut = 1x1 conv
+ mean pool; residual = norm, ReLU, 3x3 conv (same width), norm, ReLU, 3x3
conv + mean pool. Upsampling is nearest-neighbour. Larger resolutions add
blocks at the image end; channels stop at 8 * width.

The resampling convolutions use `UpsampleConv` / `ConvMeanPool`, which the
'fast' implementation computes at the low resolution (2.25x fewer
multiply-adds than resample-then-convolve, and no XLA convolution to
differentiate twice on CPU).

Initialization follows the paper's code: uniform with variance
2 / fan_avg ("He") for the convolutions inside blocks, Glorot uniform for the
dense layers and the image-level convolutions.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facegan_jax import conditioning
from facegan_jax.models import conv as conv_lib
from facegan_jax.models import dcgan
from facegan_jax.models import downsample
from facegan_jax.models import normalization
from facegan_jax.models import upsample

Array = jax.Array

_HE_INIT = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')
_GLOROT_INIT = nn.initializers.glorot_uniform()
MIN_RESOLUTION = 64


def generator_channels(resolution: int, width: int) -> list[int]:
  """Output channels of the up blocks: [8, 4, 2, 1] x width at 64."""
  return dcgan.generator_channels(resolution, width)


def discriminator_channels(resolution: int, width: int) -> list[int]:
  """Output channels of the down blocks: [2, 4, 8, 8] x width at 64."""
  return [width * min(2 ** (i + 1), dcgan.MAX_WIDTH_MULTIPLIER)
          for i in range(dcgan.num_blocks(resolution))]


class UpBlock(nn.Module):
  """Residual block that doubles resolution: [B, H, W, C] -> [B, 2H, 2W, F]."""
  features: int
  norm: str
  conv_impl: str
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    layer_args = dict(impl=self.conv_impl, dtype=self.dtype)
    shortcut = upsample.UpsampleConv(self.features, (1, 1),
                                     kernel_init=_GLOROT_INIT,
                                     name='shortcut', **layer_args)(x)
    h = normalization.normalize(x, self.norm, train, self.dtype, name='norm_0')
    h = upsample.UpsampleConv(self.features, (3, 3), kernel_init=_HE_INIT,
                              name='conv_0', **layer_args)(nn.relu(h))
    h = normalization.normalize(h, self.norm, train, self.dtype, name='norm_1')
    h = conv_lib.Conv(self.features, (3, 3), kernel_init=_HE_INIT,
                      name='conv_1', **layer_args)(nn.relu(h))
    return shortcut + h


class DownBlock(nn.Module):
  """Residual block that halves resolution: [B, H, W, C] -> [B, H/2, W/2, F]."""
  features: int
  norm: str
  spectral_norm: bool
  conv_impl: str
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    layer_args = dict(impl=self.conv_impl, dtype=self.dtype)

    def sn(layer: nn.Module, h: Array) -> Array:
      return normalization.apply_layer(layer, h, self.spectral_norm, train,
                                       name=f'{layer.name}_sn')

    shortcut = sn(downsample.ConvMeanPool(self.features, (1, 1),
                                          kernel_init=_GLOROT_INIT,
                                          name='shortcut', **layer_args), x)
    h = normalization.normalize(x, self.norm, train, self.dtype, name='norm_0')
    h = sn(conv_lib.Conv(x.shape[-1], (3, 3), kernel_init=_HE_INIT,
                         name='conv_0', **layer_args), nn.relu(h))
    h = normalization.normalize(h, self.norm, train, self.dtype, name='norm_1')
    h = sn(downsample.ConvMeanPool(self.features, (3, 3),
                                   kernel_init=_HE_INIT, name='conv_1',
                                   **layer_args), nn.relu(h))
    return shortcut + h


class ResNetGenerator(nn.Module):
  """z [B, latent_dim] -> images [B, R, R, 3] float32 in [-1, 1].

  Attributes:
    resolution: R, a power of two >= 64.
    width: channels of the last block (dim in the paper).
    norm: 'batch' or 'none'.
    conv_impl: 'fast' or 'xla'.
    dtype: compute dtype; parameters stay float32.
  """
  resolution: int = 64
  width: int = 64
  norm: str = 'batch'
  conv_impl: str = 'fast'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: Array, *, train: bool) -> Array:
    """Generates images; `train` selects batch statistics."""
    channels = generator_channels(self.resolution, self.width)
    x = nn.Dense(16 * channels[0], dtype=self.dtype,
                 kernel_init=_GLOROT_INIT, name='project')(z)
    x = x.reshape(z.shape[0], 4, 4, channels[0])
    for i, features in enumerate(channels):
      x = UpBlock(features, self.norm, self.conv_impl, self.dtype,
                  name=f'up_{i}')(x, train=train)
    x = normalization.normalize(x, self.norm, train, self.dtype,
                                name='out_norm')
    x = conv_lib.Conv(3, (3, 3), impl=self.conv_impl, dtype=self.dtype,
                      kernel_init=_GLOROT_INIT, name='to_rgb')(nn.relu(x))
    return jnp.tanh(x.astype(jnp.float32))


class ResNetDiscriminator(nn.Module):
  """images [B, R, R, 3] -> scores [B] float32.

  Attributes:
    resolution: R, a power of two >= 64.
    width: channels of the input conv (dim in the paper).
    norm: 'none', 'layer' (the paper's WGAN-GP critic) or 'batch'.
    spectral_norm: spectral normalization of every conv and dense layer.
    conv_impl: 'fast' or 'xla'.
    dtype: compute dtype; parameters stay float32.
  """
  resolution: int = 64
  width: int = 64
  norm: str = 'layer'
  spectral_norm: bool = False
  conv_impl: str = 'fast'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, *,
               train: bool) -> Array:
    """Scores images; `train` updates spectral-norm / batch-norm state.

    labels [B, A] (0/1) adds the projection head of a conditional critic.
    """
    x = x.astype(self.dtype)
    layer = conv_lib.Conv(self.width, (3, 3), impl=self.conv_impl,
                          dtype=self.dtype, kernel_init=_GLOROT_INIT,
                          name='from_rgb')
    x = normalization.apply_layer(layer, x, self.spectral_norm, train,
                                  name='from_rgb_sn')
    for i, features in enumerate(
        discriminator_channels(self.resolution, self.width)):
      x = DownBlock(features, self.norm, self.spectral_norm, self.conv_impl,
                    self.dtype, name=f'down_{i}')(x, train=train)
    layer = nn.Dense(1, dtype=self.dtype, kernel_init=_GLOROT_INIT,
                     name='score')
    features = x.reshape(x.shape[0], -1)
    scores = normalization.apply_layer(layer, features, self.spectral_norm,
                                       train, name='score_sn')
    return conditioning.with_projection(scores, features, labels, self.dtype)
