"""Equalized-learning-rate layers and the modulated convolution of StyleGAN2.

Equalized learning rate (Karras et al. 2018): every weight is stored with
unit variance (divided by the layer's learning-rate multiplier) and scaled
at run time by lr_multiplier / sqrt(fan_in). Adam's step is then the same
size, relative to the effective weight, in every layer whatever its fan-in,
and a multiplier below one slows one part of the network (the mapping
network: 0.01) without touching the optimizer.

Modulated convolution (Karras et al. 2020, eq. 1-3): a per-sample style s
[B, Cin] scales the kernel's input channels, w'_b = w * s_b, and weight
demodulation divides each output channel by its L2 norm,
d_b = rsqrt(sum over taps and input channels of w'_b^2 + 1e-8). The paper
runs this as a grouped convolution with one kernel per sample. Because
s_b scales input channels and d_b output channels, the same function is

    conv(x * s_b, w) * d_b,   d_b = rsqrt(s_b^2 @ sum_taps(w^2) + 1e-8),

one convolution with a kernel shared by the whole batch, between two cheap
broadcasts (the paper's own fused=False path). The shared kernel keeps the
project's fast CPU layers (slices + matmuls, to any order of
differentiation) and cuDNN's ordinary convolution on GPU usable.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from facegan_jax.models import conv as conv_lib
from facegan_jax.models import downsample
from facegan_jax.models import upsample as upsample_lib

Array = jax.Array

# Stored weights are N(0, 1): the scale lives in the run-time gain.
UNIT_NORMAL_INIT = nn.initializers.normal(1.0)
DEMODULATION_EPSILON = 1e-8


def equalized_gain(fan_in: int, lr_multiplier: float = 1.0) -> float:
  """The run-time weight scale: lr_multiplier / sqrt(fan_in)."""
  return lr_multiplier / math.sqrt(fan_in)


class EqualizedDense(nn.Module):
  """Dense layer with equalized learning rate: [..., Din] -> [..., features].

  Parameters `kernel` [Din, features] (stored N(0, 1 / lr_multiplier^2)) and
  `bias` [features] (stored bias_init / lr_multiplier); the layer computes
  x @ (kernel * lr_multiplier / sqrt(Din)) + bias * lr_multiplier, so the
  effective weights start N(0, 1 / Din) and the effective bias at bias_init.

  Attributes:
    features: output size.
    lr_multiplier: learning-rate multiplier of this layer.
    bias_init: initial effective bias (1 for StyleGAN2's style affines).
    use_bias: whether to add a bias.
    dtype: compute dtype.
    param_dtype: parameter dtype.
    precision: matmul precision.
  """
  features: int
  lr_multiplier: float = 1.0
  bias_init: float = 0.0
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., Din] -> [..., features]."""
    fan_in = x.shape[-1]
    stored_std = 1.0 / self.lr_multiplier
    kernel = self.param('kernel', nn.initializers.normal(stored_std),
                        (fan_in, self.features), self.param_dtype)
    kernel = kernel * equalized_gain(fan_in, self.lr_multiplier)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    y = jnp.dot(x, kernel, precision=self.precision)
    if self.use_bias:
      bias = self.param(
          'bias', nn.initializers.constant(self.bias_init / self.lr_multiplier),
          (self.features,), self.param_dtype)
      y = y + (bias * self.lr_multiplier).astype(y.dtype)
    return y


def _scaled(fn, gain: float):
  """fn(x, kernel, precision) with the kernel multiplied by `gain` first."""

  def scaled_fn(x, kernel, precision=None):
    return fn(x, kernel * jnp.asarray(gain, kernel.dtype), precision=precision)

  return scaled_fn


class EqualizedConv(nn.Module):
  """'SAME' stride-1 convolution with equalized lr, optionally 2x2-pooled.

  Parameters are laid out as flax `nn.Conv` (`kernel` [kh, kw, Cin, Cout]
  stored N(0, 1), `bias` [Cout]); the convolution uses
  kernel / sqrt(kh * kw * Cin). With `down`, the output is 2x2 mean-pooled,
  computed as one strided convolution on the fast path (`downsample.py`).

  Attributes:
    features: output channels.
    kernel_size: (kh, kw), odd.
    down: halve the resolution (conv then 2x2 mean pool).
    use_bias: whether to add a bias.
    impl: 'fast' (slices + matmuls, for XLA:CPU) or 'xla'.
    dtype: compute dtype.
    param_dtype: parameter dtype.
    precision: matmul/convolution precision.
    kernel_init: initializer of the stored kernel (unit normal).
    bias_init: initializer of `bias`.
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  down: bool = False
  use_bias: bool = True
  impl: str = 'fast'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = UNIT_NORMAL_INIT
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[B, H, W, Cin] -> [B, H, W, features] ([B, H/2, W/2, ...] if down)."""
    conv_lib.check_odd_kernel_size('EqualizedConv', self.kernel_size)
    kh, kw = self.kernel_size
    gain = equalized_gain(kh * kw * x.shape[-1])
    if self.down:
      fast, xla = downsample.conv_mean_pool_fast, downsample.conv_mean_pool_xla
    else:
      fast = functools.partial(conv_lib.conv2d_fast, padding='SAME')
      xla = functools.partial(conv_lib.conv2d_xla, padding='SAME')
    return conv_lib.conv_layer_forward(self, x, fast=_scaled(fast, gain),
                                       xla=_scaled(xla, gain))


def demodulation(kernel: Array, styles: Array) -> Array:
  """Per-sample output-channel scales of weight demodulation, in float32.

  Args:
    kernel: [kh, kw, Cin, Cout], the effective (already gained) kernel.
    styles: [B, Cin].

  Returns:
    d [B, Cout] = rsqrt(sum_{taps, i} (kernel[..., i, o] * styles[b, i])^2
    + 1e-8), computed as styles^2 @ sum_taps(kernel^2): a [B, Cin] x
    [Cin, Cout] matmul instead of B modulated kernels.
  """
  kernel = kernel.astype(jnp.float32)
  styles = styles.astype(jnp.float32)
  tap_energy = jnp.sum(jnp.square(kernel), axis=(0, 1))  # [Cin, Cout]
  return lax.rsqrt(jnp.dot(jnp.square(styles), tap_energy,
                           precision=lax.Precision.HIGHEST) +
                   DEMODULATION_EPSILON)


def modulated_conv2d(x: Array, kernel: Array, styles: Array, *,
                     demodulate: bool = True, upsample: bool = False,
                     impl: str = 'fast', precision: Any = None) -> Array:
  """StyleGAN2's modulated 'SAME' convolution, as scale -> conv -> scale.

  The same function as convolving sample b with its own kernel
  kernel * styles[b] (per input channel), demodulated per output channel
  when `demodulate`; see the module docstring.

  Args:
    x: [B, H, W, Cin] in the compute dtype.
    kernel: [kh, kw, Cin, Cout] effective kernel, odd kh and kw.
    styles: [B, Cin] per-sample input-channel scales.
    demodulate: divide each sample's output channels by the norm of its
      modulated kernel.
    upsample: nearest-neighbour 2x upsampling before the convolution
      (computed at the low resolution on the fast path, `upsample.py`).
    impl: 'fast' or 'xla'.
    precision: matmul/convolution precision.

  Returns:
    [B, H, W, Cout], or [B, 2H, 2W, Cout] with `upsample`, dtype of x.
  """
  conv_lib.check_impl(impl)
  conv_lib.check_odd_kernel_size('modulated_conv2d', kernel.shape[:2])
  # Scaling input channels commutes with nearest upsampling: do it on the
  # smaller image.
  x = x * styles[:, None, None, :].astype(x.dtype)
  weight = kernel.astype(x.dtype)
  if upsample:
    conv = (upsample_lib.upsample_conv_fast if impl == 'fast' else
            upsample_lib.upsample_conv_xla)
    y = conv(x, weight, precision=precision)
  else:
    conv = conv_lib.conv2d_fast if impl == 'fast' else conv_lib.conv2d_xla
    y = conv(x, weight, (1, 1), 'SAME', precision=precision)
  if demodulate:
    y = y * demodulation(kernel, styles)[:, None, None, :].astype(y.dtype)
  return y


class ModulatedConv(nn.Module):
  """Style affine + modulated convolution: (x, w) -> [B, H', W', features].

  Parameters: `affine` (an `EqualizedDense` w [B, Wdim] -> styles [B, Cin],
  bias initialized to 1 so styles start near one) and `kernel` [k, k, Cin,
  features] stored N(0, 1), used with the equalized-lr gain
  1 / sqrt(k * k * Cin). No bias: the caller adds it after the noise.

  Attributes:
    features: output channels.
    kernel_size: k, odd (3 for synthesis layers, 1 for toRGB).
    demodulate: weight demodulation (off for toRGB).
    upsample: nearest 2x upsampling before the convolution.
    impl: 'fast' or 'xla'.
    dtype: compute dtype of the convolution (the styles and demodulation
      stay float32).
    param_dtype: parameter dtype.
    precision: matmul/convolution precision.
  """
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  upsample: bool = False
  impl: str = 'fast'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array, w: Array) -> Array:
    """x [B, H, W, Cin], w [B, Wdim] -> [B, H, W, features] (2H, 2W if up)."""
    cin = x.shape[-1]
    styles = EqualizedDense(cin, bias_init=1.0, param_dtype=self.param_dtype,
                            name='affine')(w.astype(jnp.float32))
    k = self.kernel_size
    kernel = self.param('kernel', UNIT_NORMAL_INIT, (k, k, cin, self.features),
                        self.param_dtype)
    kernel = kernel * equalized_gain(k * k * cin)
    return modulated_conv2d(x.astype(self.dtype), kernel, styles,
                            demodulate=self.demodulate,
                            upsample=self.upsample, impl=self.impl,
                            precision=self.precision)
