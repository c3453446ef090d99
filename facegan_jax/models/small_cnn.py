"""The simplest baseline critic: two strided convs and a dense score."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facegan_jax import conditioning
from facegan_jax.models import conv as conv_lib
from facegan_jax.models import normalization

Array = jax.Array


class SmallCNNDiscriminator(nn.Module):
  """images [B, R, R, 3] -> scores [B] float32.

  4x4 stride-2 conv (width) + LeakyReLU(0.2), 4x4 stride-2 conv (2 * width)
  [+ norm] + LeakyReLU(0.2), flatten, dense to 1.

  Attributes:
    width: channels of the first conv.
    norm: 'none', 'layer' or 'batch', after the second conv.
    spectral_norm: spectral normalization of both convs and the dense layer.
    conv_impl: 'fast' or 'xla'.
    dtype: compute dtype; parameters stay float32.
  """
  width: int = 64
  norm: str = 'none'
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
    for i, features in enumerate((self.width, 2 * self.width)):
      normalized = i > 0 and self.norm != 'none'
      layer = conv_lib.Conv(features, (4, 4), (2, 2), ((1, 1), (1, 1)),
                            use_bias=not normalized, impl=self.conv_impl,
                            dtype=self.dtype, name=f'conv_{i}')
      x = normalization.apply_layer(layer, x, self.spectral_norm, train,
                                    name=f'conv_{i}_sn')
      if normalized:
        x = normalization.normalize(x, self.norm, train, self.dtype,
                                    name=f'conv_{i}_norm')
      x = nn.leaky_relu(x, 0.2)
    layer = nn.Dense(1, dtype=self.dtype, name='score')
    features = x.reshape(x.shape[0], -1)
    scores = normalization.apply_layer(layer, features, self.spectral_norm,
                                       train, name='score_sn')
    return conditioning.with_projection(scores, features, labels, self.dtype)
