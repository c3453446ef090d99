"""Upsampling convolutions that XLA:CPU differentiates fast.

Two layers, each with an 'xla' implementation (the textbook definition) and
a 'fast' one that computes the same function for XLA:CPU:

* `ConvTranspose`: flax `nn.ConvTranspose(features, kernel_size, strides,
  padding='SAME')` (`lax.conv_transpose`, kernel not transposed), parameters
  `kernel` [kh, kw, Cin, Cout] and `bias` [Cout] as flax lays them out. Its
  weight gradient is a convolution that XLA:CPU runs on a slow generic path
  (7 s of the 11.8 s first generator step in docs/cpu_performance.md).
* `UpsampleConv`: nearest-neighbour x2 upsampling followed by a 'SAME'
  stride-1 convolution (the ResNet blocks of Gulrajani et al. 2017).

Both 'fast' versions are "GEMM + col2im", the way PyTorch computes transposed
convolutions: one matmul of every input pixel with every kernel tap,
[B, H, W, Cin] @ [Cin, kh * kw * Cout], split into kh*kw tap planes; each
output phase (the s*s sub-pixel positions) sums the shifted tap planes it
needs, and a depth-to-space interleaves the phases. Derivatives of matmuls,
splits, pads and adds are again matmuls, concatenations, pads and adds. The
matmul does no wasted work: kh*kw*Cin*Cout multiply-adds per input pixel,
against s*s times that for upsample-then-convolve and 2.25x for a sub-pixel
3x3 convolution with zero taps. Forward + backward over the four DCGAN-64
generator layers (batch 64, this 2-core CPU) it measured 1.6x faster than
the sub-pixel 3x3 version and 1.9x faster than four 2x2 phase convolutions
by im2col, 20x on the last 64 -> 3 layer, where im2col feeds a matmul with
only 3-12 output columns.

PyTorch `ConvTranspose2d(Cin, Cout, 4, stride=2, padding=1)` with weight `w`
[Cin, Cout, 4, 4] is the same function as `ConvTranspose(Cout, (4, 4),
(2, 2))` here with `kernel = w.transpose(2, 3, 0, 1)[::-1, ::-1]` (flax's
'SAME' does not flip the kernel; PyTorch's transposed conv does).
"""

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from facegan_jax.models import conv as conv_lib

Array = jax.Array

# One output phase: (tap index, input offset) pairs. Output pixel s*m + r
# sums tap plane `tap` at input pixel m + offset for every pair of phase r.
_PhasePlan = list[tuple[int, int]]


def _shift(plane: Array, di: int, dj: int) -> Array:
  """out[:, m, n] = plane[:, m + di, n + dj], zero outside the plane.

  One lax.pad with a negative width on one side (a crop): its transpose is
  the opposite pad of a plane-sized array, so the backward pass never
  materializes anything larger than one tap plane.
  """
  zero = jnp.zeros((), plane.dtype)
  return lax.pad(plane, zero, ((0, 0, 0), (-di, di, 0), (-dj, dj, 0),
                               (0, 0, 0)))


def _col2im(planes: Sequence[Sequence[Array]],
            row_plan: Sequence[_PhasePlan],
            col_plan: Sequence[_PhasePlan]) -> Array:
  """Sums shifted tap planes into output phases and interleaves them.

  Args:
    planes: planes[i][j] [B, H, W, C], input pixels times kernel tap (i, j).
    row_plan: for each row phase r (s_h of them), its (tap, offset) pairs.
    col_plan: the same for columns (s_w phases).

  Returns:
    [B, H * s_h, W * s_w, C]: pixel (s_h*m + r, s_w*n + c) is the sum over
    row pairs (i, di) of phase r and column pairs (j, dj) of phase c of
    planes[i][j][:, m + di, n + dj], zero where that falls outside.
  """
  b, h, w, c = planes[0][0].shape
  phases = []
  for row_pairs in row_plan:
    for col_pairs in col_plan:
      total = None
      for i, di in row_pairs:
        for j, dj in col_pairs:
          plane = _shift(planes[i][j], di, dj)
          total = plane if total is None else total + plane
      if total is None:  # A phase no tap reaches (stride > kernel size).
        total = jnp.zeros((b, h, w, c), planes[0][0].dtype)
      phases.append(total)
  y = jnp.stack(phases, axis=3).reshape(b, h, w, -1)
  return conv_lib.depth_to_space(y, (len(row_plan), len(col_plan)))


def _tap_planes(x: Array, kernel: Array,
                precision: Any) -> list[list[Array]]:
  """x [B, H, W, Cin] times each tap of kernel [kh, kw, Cin, Cout].

  One matmul for all taps, then a split: the split's transpose is a
  concatenation, so the backward pass is one matmul too (slicing the planes
  out of a [B, H, W, kh, kw, Cout] array instead would transpose into kh*kw
  zero-padded copies of that whole array).

  Returns:
    planes[i][j] [B, H, W, Cout] = x @ kernel[i, j].
  """
  kh, kw, cin, cout = kernel.shape
  kernel = kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)
  flat = jnp.split(conv_lib.pixel_matmul(x, kernel, precision), kh * kw,
                   axis=-1)
  return [flat[i * kw:(i + 1) * kw] for i in range(kh)]


def conv_transpose_same_padding(kernel_size: int, stride: int) -> int:
  """Low-side padding of the dilated input in `lax.conv_transpose` 'SAME'."""
  if stride > kernel_size - 1:
    return kernel_size - 1
  return -(-(kernel_size + stride - 2) // 2)


def _conv_transpose_plan(kernel_size: int, stride: int) -> list[_PhasePlan]:
  """Phase plan of a 'SAME' transposed conv along one dimension.

  lax.conv_transpose convolves the stride-dilated input, padded by `pad` on
  the low side, with the unflipped kernel: y[o] = sum_k x[(o + k - pad) / s]
  K[k] over the taps k that make the index an integer. With o = s*m + r, tap
  k reaches phase r = (pad - k) mod s at input offset (r + k - pad) / s.
  """
  pad = conv_transpose_same_padding(kernel_size, stride)
  plan = [[] for _ in range(stride)]
  for k in range(kernel_size):
    r = (pad - k) % stride
    plan[r].append((k, (r + k - pad) // stride))
  return plan


def conv_transpose_fast(x: Array, kernel: Array, strides: Sequence[int],
                        precision: Any = None) -> Array:
  """Same function as `lax.conv_transpose(x, kernel, strides, 'SAME')`.

  Args:
    x: [B, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].
    strides: (sh, sw).
    precision: passed to the matmul.

  Returns:
    [B, H * sh, W * sw, Cout].
  """
  kh, kw, _, _ = kernel.shape
  sh, sw = strides
  return _col2im(_tap_planes(x, kernel, precision),
                 _conv_transpose_plan(kh, sh), _conv_transpose_plan(kw, sw))


def conv_transpose_xla(x: Array, kernel: Array, strides: Sequence[int],
                       precision: Any = None) -> Array:
  """The reference: `lax.conv_transpose` 'SAME', as flax nn.ConvTranspose."""
  return lax.conv_transpose(x, kernel, tuple(strides), 'SAME',
                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                            precision=precision)


def upsample_nearest(x: Array, factor: int = 2) -> Array:
  """[B, H, W, C] -> [B, H * factor, W * factor, C], repeating pixels."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def _upsample_conv_plan(kernel_size: int) -> list[_PhasePlan]:
  """Phase plan of nearest x2 upsampling + 'SAME' conv along one dimension.

  y[2m + r] = sum_a up(x)[2m + r + a - pad] K[a] and up(x)[j] = x[j // 2],
  so tap a reaches phase r at input offset (r + a - pad) // 2 (zero padding
  of the upsampled image is zero padding of x).
  """
  pad = (kernel_size - 1) // 2
  return [[(a, (r + a - pad) // 2) for a in range(kernel_size)]
          for r in range(2)]


def upsample_conv_fast(x: Array, kernel: Array,
                       precision: Any = None) -> Array:
  """Nearest x2 upsampling then a 'SAME' stride-1 conv, by GEMM + col2im.

  Args:
    x: [B, H, W, Cin].
    kernel: [kh, kw, Cin, Cout], odd kh and kw.
    precision: passed to the matmul.

  Returns:
    [B, 2H, 2W, Cout].
  """
  kh, kw, _, _ = kernel.shape
  if kh == kw == 1:
    # Pointwise: convolve the small image, then upsample (they commute).
    return upsample_nearest(conv_lib.pixel_matmul(x, kernel[0, 0],
                                                precision))
  return _col2im(_tap_planes(x, kernel, precision),
                 _upsample_conv_plan(kh), _upsample_conv_plan(kw))


def upsample_conv_xla(x: Array, kernel: Array,
                      precision: Any = None) -> Array:
  """The reference: `upsample_nearest` then `lax.conv_general_dilated`."""
  return conv_lib.conv2d_xla(upsample_nearest(x), kernel, (1, 1), 'SAME',
                             precision)


class ConvTranspose(nn.Module):
  """flax `nn.ConvTranspose(..., padding='SAME')`, same parameters.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw); the output is (H * sh, W * sw).
    use_bias: whether to add a bias.
    impl: 'fast' (GEMM + col2im, for XLA:CPU) or 'xla' (`lax.conv_transpose`).
    dtype: compute dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
    precision: matmul/convolution precision.
    kernel_init: initializer of `kernel` [kh, kw, Cin, Cout].
    bias_init: initializer of `bias` [Cout].
  """
  features: int
  kernel_size: Sequence[int] = (4, 4)
  strides: Sequence[int] = (2, 2)
  use_bias: bool = True
  impl: str = 'fast'
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = conv_lib.DEFAULT_KERNEL_INIT
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, H, W, Cin] -> [B, H * sh, W * sw, features]."""
    return conv_lib.conv_layer_forward(
        self, x,
        fast=functools.partial(conv_transpose_fast, strides=self.strides),
        xla=functools.partial(conv_transpose_xla, strides=self.strides))


class UpsampleConv(nn.Module):
  """Nearest-neighbour x2 upsampling, then a 'SAME' stride-1 convolution.

  Parameters are those of the convolution, laid out as flax `nn.Conv`.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw), odd.
    use_bias: whether to add a bias.
    impl: 'fast' (GEMM + col2im, for XLA:CPU) or 'xla' (upsample, then
      `lax.conv_general_dilated`).
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
    """[B, H, W, Cin] -> [B, 2H, 2W, features]."""
    conv_lib.check_odd_kernel_size('UpsampleConv', self.kernel_size)
    return conv_lib.conv_layer_forward(self, x, fast=upsample_conv_fast,
                                       xla=upsample_conv_xla)
