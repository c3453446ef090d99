"""Normalization choices shared by the architectures.

Helpers called from inside a parent's `nn.compact` method, so the layers they
create belong to (and are named in) that parent.
"""

from typing import Any

import flax.linen as nn
import jax

Array = jax.Array

G_NORMS = ('batch', 'none')
D_NORMS = ('none', 'layer', 'batch')

# PyTorch BatchNorm2d defaults (running-average momentum 0.1, eps 1e-5), so
# the DCGAN-64 models match the reference implementation.
BATCH_NORM_MOMENTUM = 0.9
_EPSILON = 1e-5


def normalize(x: Array, kind: str, train: bool, dtype: Any,
              name: str | None = None) -> Array:
  """Applies the normalization `kind` to x [B, H, W, C] (or [B, C]).

  Args:
    x: activations, channels last.
    kind: 'none'; 'batch' (per channel over batch and space; batch statistics
      and running-average updates when `train`, the running averages
      otherwise: variables in 'batch_stats'); or 'layer' (per example over
      all of H, W and C, with a per-channel scale and bias, as in the WGAN-GP
      paper's critic: no cross-example coupling, so the gradient penalty
      stays per-example).
    train: batch norm mode, see above.
    dtype: compute dtype of the layer (statistics are reduced in float32).
    name: submodule name in the parent.

  Returns:
    x normalized, same shape.
  """
  if kind == 'none':
    return x
  if kind == 'batch':
    return nn.BatchNorm(use_running_average=not train,
                        momentum=BATCH_NORM_MOMENTUM, epsilon=_EPSILON,
                        dtype=dtype, name=name)(x)
  if kind == 'layer':
    return nn.LayerNorm(reduction_axes=tuple(range(1, x.ndim)),
                        feature_axes=-1, epsilon=_EPSILON, dtype=dtype,
                        name=name)(x)
  raise ValueError(
      f'Normalization {kind!r} is unknown; valid choices: '
      f'{", ".join(sorted(set(G_NORMS) | set(D_NORMS)))}.')


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

