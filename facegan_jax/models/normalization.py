"""Normalization choices shared by the architectures.

Helpers called from inside a parent's `nn.compact` method, so the layers they
create belong to (and are named in) that parent.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

G_NORMS = ('batch', 'self_modulated', 'none')
D_NORMS = ('none', 'layer', 'batch')
# The norms that keep batch statistics ('batch_stats' running averages).
BATCH_STATISTICS_NORMS = ('batch', 'self_modulated')
# Units of the hidden layer that maps the latent to a layer's scale and
# shift under self-modulation (Chen et al. 2019 use 32).
MODULATION_HIDDEN_UNITS = 32

# PyTorch BatchNorm2d defaults (running-average momentum 0.1, eps 1e-5), so
# the DCGAN-64 models match the reference implementation.
BATCH_NORM_MOMENTUM = 0.9
_EPSILON = 1e-5


def normalize(x: Array, kind: str, train: bool, dtype: Any,
              name: str | None = None, latent: Array | None = None) -> Array:
  """Applies the normalization `kind` to x [B, H, W, C] (or [B, C]).

  Args:
    x: activations, channels last.
    kind: 'none'; 'batch' (per channel over batch and space; batch statistics
      and running-average updates when `train`, the running averages
      otherwise: variables in 'batch_stats'); or 'layer' (per example over
      all of H, W and C, with a per-channel scale and bias, as in the WGAN-GP
      paper's critic: no cross-example coupling, so the gradient penalty
      stays per-example); or 'self_modulated' (batch norm whose scale and
      shift are functions of `latent`, see SelfModulatedBatchNorm).
    train: batch norm mode, see above.
    dtype: compute dtype of the layer (statistics are reduced in float32).
    name: submodule name in the parent.
    latent: [B, Z], the generator's input; needed by 'self_modulated' only.

  Returns:
    x normalized, same shape.
  """
  if kind == 'none':
    return x
  if kind == 'batch':
    return nn.BatchNorm(use_running_average=not train,
                        momentum=BATCH_NORM_MOMENTUM, epsilon=_EPSILON,
                        dtype=dtype, name=name)(x)
  if kind == 'self_modulated':
    if latent is None:
      raise ValueError("Normalization 'self_modulated' needs the latent.")
    return SelfModulatedBatchNorm(train=train, dtype=dtype, name=name)(
        x, latent)
  if kind == 'layer':
    return nn.LayerNorm(reduction_axes=tuple(range(1, x.ndim)),
                        feature_axes=-1, epsilon=_EPSILON, dtype=dtype,
                        name=name)(x)
  raise ValueError(
      f'Normalization {kind!r} is unknown; valid choices: '
      f'{", ".join(sorted(set(G_NORMS) | set(D_NORMS)))}.')


class SelfModulatedBatchNorm(nn.Module):
  """Batch norm with a per-sample scale and shift computed from the latent.

  Self-modulation (Chen et al. 2019, "On Self Modulation for Generative
  Adversarial Networks"): x normalized by batch norm without its own affine
  parameters, then times 1 + gamma(z) plus beta(z), where gamma and beta are
  one MLP with a hidden ReLU layer of MODULATION_HIDDEN_UNITS. Its output
  layer starts at zero, so at initialization this is plain batch norm; the
  running statistics are batch norm's ('batch_stats').

  Attributes:
    train: batch statistics (and their running-average update) when True.
    dtype: compute dtype.
  """
  train: bool
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, latent: Array) -> Array:
    """x [B, ..., C], latent [B, Z] -> x normalized and modulated."""
    channels = x.shape[-1]
    x = nn.BatchNorm(use_running_average=not self.train,
                     momentum=BATCH_NORM_MOMENTUM, epsilon=_EPSILON,
                     use_scale=False, use_bias=False, dtype=self.dtype,
                     name='norm')(x)
    hidden = nn.relu(nn.Dense(MODULATION_HIDDEN_UNITS, dtype=self.dtype,
                              name='hidden')(latent))
    scale_and_shift = nn.Dense(2 * channels, dtype=self.dtype,
                               kernel_init=nn.initializers.zeros,
                               name='scale_shift')(hidden)
    # [B, 2C] -> two [B, 1, ..., 1, C], broadcast over the spatial axes.
    scale_and_shift = scale_and_shift.reshape(
        (x.shape[0],) + (1,) * (x.ndim - 2) + (2 * channels,))
    scale, shift = jnp.split(scale_and_shift, 2, axis=-1)
    return x * (1 + scale) + shift


def apply_layer(layer: nn.Module, x: Array, spectral_norm: bool,
                train: bool, name: str | None = None) -> Array:
  """Calls `layer(x)`, spectrally normalized when `spectral_norm`.

  flax `nn.SpectralNorm` divides every matrix-shaped parameter (a conv kernel
  [kh, kw, Cin, Cout] flattened to [kh*kw*Cin, Cout]) by its largest singular
  value, estimated by one power-iteration step from a stored vector `u` in
  'batch_stats'. `train` stores the new estimate; either way the result is a
  pure, differentiable function of the parameters and the input.

  Args:
    layer: an unbound layer created in the calling parent.
    x: its input.
    spectral_norm: whether to normalize its parameters.
    train: whether to update the power-iteration state.
    name: name of the SpectralNorm wrapper in the parent.
  """
  if not spectral_norm:
    return layer(x)
  return nn.SpectralNorm(layer, name=name)(x, update_stats=train)

