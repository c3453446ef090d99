"""2-D convolution that XLA:CPU differentiates fast, to any order.

The WGAN-GP penalty differentiates the critic w.r.t. its input and then
w.r.t. its parameters. On XLA:CPU the second-order gradient of a convolution
lowers to convolutions with a reversed kernel window (`rhs_reversal` in the
optimized HLO) that miss the fast library path and run 20-100x slower than
the forward pass (docs/cpu_performance.md).

`conv2d_fast` computes exactly `lax.conv_general_dilated` (NHWC input, HWIO
kernel) as shifted slices concatenated on the channel axis followed by one
matmul (im2col by slicing). A strided convolution first folds the stride
into channels (space-to-depth) and becomes a stride-1 convolution with a
rearranged kernel. Every derivative of slices, pads, reshapes and matmuls is
again slices, pads, reshapes and matmuls, so no convolution is left for XLA to
lower badly, whatever the order of differentiation.

Measured on the 2-core development CPU, batch 64, gradient w.r.t. the kernel
of a per-example penalty on the input gradient, one DCGAN-64 critic layer
(4x4 stride-2 pad-1 conv + LeakyReLU): 64x64x3->64: 141 -> 39 ms; 32x32x64->128:
12.8 s -> 240 ms; 16x16x128->256: 2.5 s -> 182 ms; 8x8x256->512: 1.5 s ->
133 ms (XLA conv -> this; noisy shared machine, ratios are what matter).

Parameters keep the standard flax `nn.Conv` layout (`kernel` [kh, kw, Cin,
Cout], `bias` [Cout]); the kernel is rearranged inside the forward pass, so
checkpoints do not depend on the implementation.
"""

from collections.abc import Callable
from collections.abc import Sequence
import functools
import math
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

IMPLS = ('fast', 'xla')

PaddingLike = str | int | Sequence[int | tuple[int, int]]
Array = jax.Array

# flax nn.Conv's default, shared by every layer built on `conv_layer_forward`.
DEFAULT_KERNEL_INIT = nn.initializers.lecun_normal()


def check_impl(impl: str) -> None:
  """Raises ValueError unless `impl` names a convolution implementation."""
  if impl not in IMPLS:
    raise ValueError(
        f'impl={impl!r} is not a convolution implementation; valid choices: '
        f'{", ".join(IMPLS)}.')


def check_odd_kernel_size(layer: str, kernel_size: Sequence[int]) -> None:
  """Raises ValueError unless both sides of `layer`'s kernel are odd."""
  if any(k % 2 == 0 for k in kernel_size):
    raise ValueError(
        f'{layer} kernel_size={tuple(kernel_size)} must be odd in both '
        "dimensions (a 'SAME' convolution centred on each pixel).")


def explicit_padding(padding: PaddingLike, spatial_shape: Sequence[int],
                     kernel_size: Sequence[int],
                     strides: Sequence[int]) -> list[tuple[int, int]]:
  """Returns [(low, high)] per spatial dim, as `lax.conv_general_dilated` pads.

  Args:
    padding: 'SAME', 'VALID', one int for all sides, or per-dimension ints or
      (low, high) pairs (the forms flax `nn.Conv` accepts).
    spatial_shape: (H, W) of the input.
    kernel_size: (kh, kw).
    strides: (sh, sw).
  """
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID'):
      raise ValueError(
          f'padding={padding!r} is not supported; valid choices: SAME, VALID, '
          'an int, or (low, high) pairs per spatial dimension.')
    return [tuple(p) for p in lax.padtype_to_pads(
        tuple(spatial_shape), tuple(kernel_size), tuple(strides),
        padding.upper())]
  if isinstance(padding, int):
    return [(padding, padding)] * len(spatial_shape)
  pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
  if len(pads) != len(spatial_shape):
    raise ValueError(
        f'padding={padding!r} must have one entry per spatial dimension '
        f'({len(spatial_shape)}).')
  return pads


def space_to_depth(x: Array, block: Sequence[int]) -> Array:
  """Folds (bh, bw) pixel blocks into channels.

  Args:
    x: [B, H, W, C] with H divisible by bh and W by bw.
    block: (bh, bw).

  Returns:
    [B, H / bh, W / bw, bh * bw * C], channels ordered (row in block, column
    in block, C).
  """
  bh, bw = block
  if (bh, bw) == (1, 1):
    return x
  b, h, w, c = x.shape
  x = x.reshape(b, h // bh, bh, w // bw, bw, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // bh, w // bw, bh * bw * c)


def depth_to_space(x: Array, block: Sequence[int]) -> Array:
  """Inverse of `space_to_depth`: [B, H, W, bh*bw*C] -> [B, H*bh, W*bw, C]."""
  bh, bw = block
  b, h, w, c = x.shape
  c //= bh * bw
  x = x.reshape(b, h, w, bh, bw, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * bh, w * bw, c)


# Matmul operands rounded to bfloat16, products summed in float32 (the
# `precision` the layers pass for model.matmul_inputs='bfloat16'). XLA:CPU
# runs such a dot about 1.7x as fast as a float32 one on CPUs with
# AVX512-BF16, but only with both operands in row-major [M, K] @ [K, N]
# layout: given a transposed operand it falls back to float32.
BF16_INPUTS = lax.DotAlgorithmPreset.BF16_BF16_F32


def _dot(a: Array, b: Array, precision: Any) -> Array:
  if precision == BF16_INPUTS:
    return jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                   preferred_element_type=jnp.float32).astype(
                       jnp.result_type(a, b))
  return jnp.dot(a, b, precision=precision)


def _copy_transposed(a: Array) -> Array:
  """a.T as a new row-major array: XLA folds a plain transpose into the dot
  that consumes it (the layout BF16_INPUTS loses its speed with), not one
  of a 3-D view."""
  rows, cols = a.shape
  return a.reshape(rows, 1, cols).transpose(2, 1, 0).reshape(cols, rows)


def _dot_rhs_transposed(a: Array, b: Array, precision: Any) -> Array:
  """a [M, K] @ b.T ([N, K]) from row-major operands: copies b.T, or a.T
  and the product b @ a.T, whichever moves fewer elements."""
  (m, k), (n, _) = a.shape, b.shape
  if n * k <= m * (k + n):
    return _dot(a, _copy_transposed(b), precision)
  return _copy_transposed(_dot(b, _copy_transposed(a), precision))


def _dot_lhs_transposed(a: Array, b: Array, precision: Any) -> Array:
  """a.T ([K, M]) @ b [K, N] from row-major operands: copies a.T, or b.T
  and the product b.T @ a, whichever moves fewer elements."""
  (k, m), (_, n) = a.shape, b.shape
  if k * m <= n * (k + m):
    return _dot(_copy_transposed(a), b, precision)
  return _copy_transposed(_dot(_copy_transposed(b), a, precision))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pixel_matmul(x: Array, kernel: Array, precision: Any) -> Array:
  return _dot(x, kernel, precision)


def _pixel_matmul_fwd(x, kernel, precision):
  return _pixel_matmul(x, kernel, precision), (x, kernel)


def _pixel_matmul_bwd(precision, residuals, g):
  x, kernel = residuals
  cin, n = kernel.shape
  pixels = x.reshape(-1, cin)
  if precision == BF16_INPUTS:
    g = g.reshape(-1, n)
    dx = _dot_rhs_transposed(g, kernel, precision).reshape(x.shape)
    dkernel = _dot_lhs_transposed(pixels, g, precision)
  else:
    dx = jnp.dot(g, kernel.T, precision=precision)
    dkernel = jnp.dot(pixels.T, g.reshape(-1, n), precision=precision)
  return dx, dkernel


_pixel_matmul.defvjp(_pixel_matmul_fwd, _pixel_matmul_bwd)


def pixel_matmul(x: Array, kernel: Array, precision: Any = None) -> Array:
  """x [B, H, W, K] @ kernel [K, N] -> [B, H, W, N], every pixel at once.

  The same function as `jnp.dot`, with the weight gradient written out as
  x^T @ g over the B*H*W pixels. Left to autodiff, XLA:CPU picked the
  operand order that transposes the wide [B*H*W, N] cotangent in memory
  (DCGAN-64 generator step 0.78 -> 0.60 s with this). The rule is ordinary
  JAX code, so it differentiates again (the gradient penalty's second
  order); forward-mode (jax.jvp) is what a custom VJP gives up.
  """
  return _pixel_matmul(x, kernel, precision)


def valid_conv_by_slices(x: Array, kernel: Array,
                         precision: Any = None) -> Array:
  """Stride-1 'VALID' convolution as im2col by slicing + one matmul.

  Args:
    x: [B, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].
    precision: passed to the matmul.

  Returns:
    [B, H - kh + 1, W - kw + 1, Cout].
  """
  kh, kw, cin, cout = kernel.shape
  _, h, w, _ = x.shape
  out_h, out_w = h - kh + 1, w - kw + 1
  if kh == h and kw == w:
    # The window covers the whole input (e.g. a final 4x4 'VALID' conv to a
    # score): a plain flatten is the im2col.
    patches = x.reshape(x.shape[0], 1, 1, kh * kw * cin)
  elif kh * kw == 1:
    patches = x
  else:
    # Tap order (i, j) row-major with Cin innermost = kernel.reshape order.
    # Stacking on a new axis then merging it into channels is the same
    # layout as concatenating on channels, but XLA:CPU copies it faster
    # (7% of a whole WGAN-GP critic step at DCGAN-64).
    patches = jnp.stack(
        [x[:, i:i + out_h, j:j + out_w, :]
         for i in range(kh) for j in range(kw)], axis=3)
    patches = patches.reshape(*patches.shape[:3], kh * kw * cin)
  return pixel_matmul(patches, kernel.reshape(kh * kw * cin, cout),
                      precision)


def _blocked_kernel(kernel: Array, strides: Sequence[int]) -> Array:
  """Rearranges a strided conv kernel for the space-to-depth input.

  Tap (i, j) of the stride-(sh, sw) kernel becomes tap (i // sh, j // sw),
  channel block (i % sh, j % sw) of a stride-1 kernel; taps past the end of a
  kernel whose size is not a multiple of the stride are zero.

  Args:
    kernel: [kh, kw, Cin, Cout].
    strides: (sh, sw).

  Returns:
    [ceil(kh / sh), ceil(kw / sw), sh * sw * Cin, Cout].
  """
  sh, sw = strides
  if (sh, sw) == (1, 1):
    return kernel
  kh, kw, cin, cout = kernel.shape
  bh, bw = math.ceil(kh / sh), math.ceil(kw / sw)
  kernel = jnp.pad(kernel, ((0, bh * sh - kh), (0, bw * sw - kw), (0, 0),
                            (0, 0)))
  kernel = kernel.reshape(bh, sh, bw, sw, cin, cout)
  kernel = kernel.transpose(0, 2, 1, 3, 4, 5)
  return kernel.reshape(bh, bw, sh * sw * cin, cout)


def conv2d_fast(x: Array, kernel: Array, strides: Sequence[int] = (1, 1),
                padding: PaddingLike = 'SAME', precision: Any = None) -> Array:
  """Same function as `lax.conv_general_dilated` (NHWC, HWIO), by slices.

  Args:
    x: [B, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].
    strides: (sh, sw).
    padding: as `explicit_padding` accepts.
    precision: passed to the matmul.

  Returns:
    [B, Ho, Wo, Cout] with Ho = (H + pad_h - kh) // sh + 1, likewise Wo.
  """
  kh, kw, _, _ = kernel.shape
  sh, sw = strides
  _, h, w, _ = x.shape
  (lo_h, hi_h), (lo_w, hi_w) = explicit_padding(padding, (h, w), (kh, kw),
                                                strides)
  out_h = (h + lo_h + hi_h - kh) // sh + 1
  out_w = (w + lo_w + hi_w - kw) // sw + 1
  if out_h < 1 or out_w < 1:
    raise ValueError(
        f'Convolution of a {h}x{w} input with a {kh}x{kw} kernel, strides '
        f'{tuple(strides)} and padding {padding!r} has no output pixels.')
  # After space-to-depth, a stride-1 conv with ceil(k/s) taps must see
  # out + taps - 1 blocks: pad (or crop: lax.pad takes negative widths) the
  # high side to exactly that many pixels. Cropped pixels feed no output.
  blocks_h, blocks_w = math.ceil(kh / sh), math.ceil(kw / sw)
  need_h = sh * (out_h + blocks_h - 1)
  need_w = sw * (out_w + blocks_w - 1)
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (lo_h, need_h - h - lo_h, 0),
               (lo_w, need_w - w - lo_w, 0), (0, 0, 0)))
  x = space_to_depth(x, (sh, sw))
  return valid_conv_by_slices(x, _blocked_kernel(kernel, (sh, sw)),
                              precision=precision)


def conv2d_xla(x: Array, kernel: Array, strides: Sequence[int] = (1, 1),
               padding: PaddingLike = 'SAME', precision: Any = None) -> Array:
  """The reference: `lax.conv_general_dilated`, NHWC input, HWIO kernel."""
  kh, kw, _, _ = kernel.shape
  pads = explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
  return lax.conv_general_dilated(
      x, kernel, window_strides=tuple(strides), padding=pads,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision)


LayerFn = Callable[..., Array]


def conv_layer_forward(layer: nn.Module, x: Array, fast: LayerFn,
                       xla: LayerFn) -> Array:
  """The body of every convolution layer's `__call__`: parameters, dtype, bias.

  Shared by `Conv`, `upsample.ConvTranspose`, `upsample.UpsampleConv` and
  `downsample.ConvMeanPool` (a function, not a base module: dataclass
  inheritance would put the base's fields before `strides` and `padding` and
  change the positional signature `Conv(features, kernel_size, strides,
  padding)`). Call it from the layer's `nn.compact` `__call__`; the
  parameters it creates belong to `layer`.

  Args:
    layer: the calling module; reads its `features`, `kernel_size`,
      `use_bias`, `impl`, `dtype`, `param_dtype`, `precision`,
      `kernel_init` and `bias_init` fields.
    x: [B, H, W, Cin].
    fast: `fast(x, kernel, precision=...)`, the layer's function for
      impl='fast'; kernel [kh, kw, Cin, features].
    xla: the same function for impl='xla'.

  Returns:
    The chosen function of x and the kernel, plus the bias; computed in
    `layer.dtype` (None: promoted from the input and parameter dtypes).
    Parameters: `kernel` [kh, kw, Cin, features] and, if `use_bias`, `bias`
    [features], in `param_dtype`: flax `nn.Conv`'s names and layout.
  """
  check_impl(layer.impl)
  kh, kw = layer.kernel_size
  kernel = layer.param('kernel', layer.kernel_init,
                       (kh, kw, x.shape[-1], layer.features),
                       layer.param_dtype)
  bias = (layer.param('bias', layer.bias_init, (layer.features,),
                      layer.param_dtype) if layer.use_bias else None)
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                            dtype=layer.dtype)
  fn = fast if layer.impl == 'fast' else xla
  y = fn(x, kernel, precision=layer.precision)
  if bias is not None:
    y = y + bias
  return y


class Conv(nn.Module):
  """2-D convolution, parameters laid out as flax `nn.Conv`.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: 'SAME', 'VALID', an int, or (low, high) pairs per dimension.
    use_bias: whether to add a bias.
    impl: 'fast' (slices + matmul, for XLA:CPU) or 'xla'
      (`lax.conv_general_dilated`); same function and parameters.
    dtype: compute dtype (None: from the inputs and parameters).
    param_dtype: parameter dtype.
    precision: matmul/convolution precision.
    kernel_init: initializer of `kernel` [kh, kw, Cin, Cout].
    bias_init: initializer of `bias` [Cout].
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: PaddingLike = 'SAME'
  use_bias: bool = True
  impl: str = 'fast'
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = DEFAULT_KERNEL_INIT
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, H, W, Cin] -> [B, Ho, Wo, features]."""
    return conv_layer_forward(
        self, x,
        fast=functools.partial(conv2d_fast, strides=self.strides,
                               padding=self.padding),
        xla=functools.partial(conv2d_xla, strides=self.strides,
                              padding=self.padding))
