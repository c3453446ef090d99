"""Convolution followed by 2x2 mean pooling, computed as one strided conv.

The ResNet critic of Gulrajani et al. (2017) halves resolution with
"ConvMeanPool": a 'SAME' stride-1 k x k convolution, then 2x2 average
pooling. Both are linear, so together they are one (k+1) x (k+1) stride-2
convolution whose kernel is the k x k kernel box-filtered by 2x2 and divided
by 4. The 'fast' implementation runs that strided convolution through
`conv.conv2d_fast` (space-to-depth + slices + matmul): a quarter of the output
pixels, 16/36 of the multiply-adds for k = 3, and no XLA convolution to
differentiate twice. A 1x1 convolution is pooled first (they commute).
Parameters are those of the k x k convolution, laid out as flax `nn.Conv`.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facegan_jax.models import conv as conv_lib

Array = jax.Array


def mean_pool(x: Array) -> Array:
  """2x2 average pooling, stride 2: [B, H, W, C] -> [B, H/2, W/2, C]."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'mean_pool needs even height and width, got {h}x{w}.')
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def pooled_kernel(kernel: Array) -> Array:
  """[k, k', Cin, Cout] -> [k+1, k'+1, Cin, Cout]: 2x2 box filter / 4.

  Tap (u, v) of the result is the mean of taps (u - p, v - q), p, q in {0, 1}
  of `kernel` (zero outside it): the kernel of conv-then-mean-pool.
  """
  padded = jnp.pad(kernel, ((1, 1), (1, 1), (0, 0), (0, 0)))
  return 0.25 * (padded[1:, 1:] + padded[:-1, 1:] + padded[1:, :-1] +
                 padded[:-1, :-1])


def conv_mean_pool_fast(x: Array, kernel: Array,
                        precision: Any = None) -> Array:
  """`mean_pool(conv 'SAME'(x, kernel))` as one strided convolution.

  Args:
    x: [B, H, W, Cin], H and W even.
    kernel: [kh, kw, Cin, Cout], odd kh and kw.
    precision: passed to the matmul.

  Returns:
    [B, H/2, W/2, Cout].
  """
  kh, kw, _, _ = kernel.shape
  if kh == kw == 1:
    return conv_lib.pixel_matmul(mean_pool(x), kernel[0, 0], precision)
  _, h, w, _ = x.shape
  if h % 2 or w % 2:
    raise ValueError(
        f'conv_mean_pool needs even height and width, got {h}x{w}.')
  # 'SAME' pads an odd kernel by (k-1)/2 on both sides; the pooled kernel at
  # stride 2 then needs exactly the same padding.
  pads = ((kh // 2, kh // 2), (kw // 2, kw // 2))
  return conv_lib.conv2d_fast(x, pooled_kernel(kernel), (2, 2), pads,
                              precision)


def conv_mean_pool_xla(x: Array, kernel: Array,
                       precision: Any = None) -> Array:
  """The reference: `lax.conv_general_dilated` 'SAME', then `mean_pool`."""
  return mean_pool(conv_lib.conv2d_xla(x, kernel, (1, 1), 'SAME', precision))


class ConvMeanPool(nn.Module):
  """A 'SAME' stride-1 convolution followed by 2x2 mean pooling.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw), odd.
    use_bias: whether to add a bias (after pooling; pooling keeps it).
    impl: 'fast' (one strided conv by slices + matmul, for XLA:CPU) or 'xla'
      (`lax.conv_general_dilated` then pooling).
    dtype: compute dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
    precision: matmul/convolution precision.
    kernel_init: initializer of `kernel` [kh, kw, Cin, Cout].
    bias_init: initializer of `bias` [Cout].
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  use_bias: bool = True
  impl: str = 'fast'
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = conv_lib.DEFAULT_KERNEL_INIT
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, H, W, Cin] -> [B, H/2, W/2, features]."""
    conv_lib.check_odd_kernel_size('ConvMeanPool', self.kernel_size)
    return conv_lib.conv_layer_forward(self, x, fast=conv_mean_pool_fast,
                                       xla=conv_mean_pool_xla)
