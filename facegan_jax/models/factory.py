"""Builds generators and discriminators from the `model` config section.

See configs/default.py for the keys. `validate_model_config` checks them
before anything is traced, so a bad name fails in milliseconds with the
valid choices instead of deep inside a jit.
"""

import math
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facegan_jax.models import conv as conv_lib
from facegan_jax.models import dcgan
from facegan_jax.models import normalization
from facegan_jax.models import packing
from facegan_jax.models import resnet
from facegan_jax.models import small_cnn
from facegan_jax.models import stylegan2

GENERATORS = ('dcgan', 'resnet', 'stylegan2')
DISCRIMINATORS = ('dcgan', 'resnet', 'small_cnn', 'stylegan2')
G_NORMS = normalization.G_NORMS
D_NORMS = normalization.D_NORMS
G_UPSAMPLINGS = ('transposed', 'nearest')
CONV_IMPLS = ('auto',) + conv_lib.IMPLS
# model.matmul_inputs -> the `precision` the dcgan layers' matmuls take.
MATMUL_PRECISIONS = {'float32': None, 'bfloat16': conv_lib.BF16_INPUTS}
# The one definition of these two; config validation and the input pipeline
# import them from here (facegan_jax.models), never the other way round.
MIN_RESOLUTION, MAX_RESOLUTION = 32, 256
# Every image side the models build: the powers of two in that range.
RESOLUTIONS = tuple(2 ** i for i in range(int(math.log2(MIN_RESOLUTION)),
                                          int(math.log2(MAX_RESOLUTION)) + 1))
# Values of config.dtype (parameters stay float32 whatever it is).
COMPUTE_DTYPES = ('float32', 'bfloat16')


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(
        f'{key}={value!r} is not valid; valid choices: {", ".join(choices)}.')


def validate_model_config(model_config: Any, resolution: int) -> None:
  """Raises ValueError naming the key if the model config cannot be built.

  Args:
    model_config: the config's `model` section (ml_collections.ConfigDict or
      anything with the same attributes).
    resolution: image side in pixels (config.dataset.resolution).
  """
  _check_choice('model.generator', model_config.generator, GENERATORS)
  _check_choice('model.discriminator', model_config.discriminator,
                DISCRIMINATORS)
  _check_choice('model.g_norm', model_config.g_norm, G_NORMS)
  _check_choice('model.d_norm', model_config.d_norm, D_NORMS)
  _check_choice('model.conv_impl', model_config.conv_impl, CONV_IMPLS)
  for key in ('spectral_norm', 'g_full_resolution_block'):
    if not isinstance(getattr(model_config, key), bool):
      raise ValueError(f'model.{key}={getattr(model_config, key)!r} must be '
                       'True or False.')
  if (model_config.g_norm == 'self_modulated' and
      model_config.generator != 'dcgan'):
    raise ValueError(
        "model.g_norm='self_modulated' is an option of the dcgan generator; "
        f"use 'batch' with model.generator={model_config.generator!r}.")
  _check_choice('model.g_upsampling', model_config.g_upsampling,
                G_UPSAMPLINGS)
  if (model_config.g_upsampling != 'transposed' and
      model_config.generator != 'dcgan'):
    raise ValueError(
        'model.g_upsampling is an option of the dcgan generator; set it to '
        f"'transposed' with model.generator={model_config.generator!r}.")
  if (model_config.g_full_resolution_block and
      model_config.generator != 'dcgan'):
    raise ValueError(
        'model.g_full_resolution_block is an option of the dcgan generator; '
        f'set it to False with model.generator={model_config.generator!r}.')
  for key in ('latent_dim', 'g_width', 'd_width'):
    value = getattr(model_config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'model.{key}={value!r} must be a positive integer.')
  group = model_config.d_minibatch_stddev
  if isinstance(group, bool) or not isinstance(group, int) or group < 0:
    raise ValueError(f'model.d_minibatch_stddev={group!r} must be 0 (off) or '
                     'the samples per group, e.g. 4.')
  pack = model_config.d_pack
  if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
    raise ValueError(f'model.d_pack={pack!r} must be 1 (off) or the samples '
                     'the critic scores together, e.g. 2.')
  if group and model_config.discriminator != 'dcgan':
    raise ValueError(
        'model.d_minibatch_stddev is an option of the dcgan critic (the '
        'stylegan2 critic always has the feature); set it to 0 with '
        f'model.discriminator={model_config.discriminator!r}.')
  if (isinstance(resolution, bool) or
      not isinstance(resolution, numbers.Integral) or
      resolution not in RESOLUTIONS):
    raise ValueError(
        f'dataset.resolution={resolution!r} is not supported; valid choices: '
        f'{", ".join(map(str, RESOLUTIONS))}.')
  if model_config.g_channels:
    if model_config.generator != 'dcgan':
      raise ValueError(
          'model.g_channels is an option of the dcgan generator; set it to '
          f"'' (and use model.g_width) with "
          f'model.generator={model_config.generator!r}.')
    dcgan.parse_channels(model_config.g_channels, resolution)
  _validate_matmul_inputs(model_config)
  _validate_stylegan2(model_config)
  for key in ('generator', 'discriminator'):
    if (getattr(model_config, key) == 'resnet' and
        resolution < resnet.MIN_RESOLUTION):
      raise ValueError(
          f"model.{key}='resnet' needs dataset.resolution >= "
          f'{resnet.MIN_RESOLUTION} (the WGAN-GP paper\'s 64x64 ResNet), got '
          f"{resolution}; use 'dcgan' at this resolution.")


def _validate_matmul_inputs(model_config: Any) -> None:
  _check_choice('model.matmul_inputs', model_config.matmul_inputs,
                tuple(MATMUL_PRECISIONS))
  if model_config.matmul_inputs == 'float32':
    return
  if (model_config.generator, model_config.discriminator) != ('dcgan',
                                                               'dcgan'):
    raise ValueError(
        f'model.matmul_inputs={model_config.matmul_inputs!r} is an option of '
        'the dcgan generator and critic; set it to float32 (or use '
        "config.dtype='bfloat16') with model.generator="
        f'{model_config.generator!r}, model.discriminator='
        f'{model_config.discriminator!r}.')


def _matmul_precision(model_config: Any) -> Any:
  """The dcgan layers' matmul precision. XLA's own convolutions (conv_impl
  'xla', the 'auto' choice on GPU and TPU) keep float32 operands: a model
  trained with bfloat16 ones on CPU samples there the same function to
  within their rounding; training there refuses the key (config_validation).
  """
  if resolve_conv_impl(model_config.conv_impl) != 'fast':
    return None
  return MATMUL_PRECISIONS[model_config.matmul_inputs]


def _validate_stylegan2(model_config: Any) -> None:
  """StyleGAN2 normalizes by demodulation and regularizes by R1: the other
  families' normalization switches do not apply to it."""
  if model_config.generator == 'stylegan2' and model_config.g_norm != 'none':
    raise ValueError(
        f"model.generator='stylegan2' demodulates instead of normalizing; "
        f"set model.g_norm='none' (got {model_config.g_norm!r}).")
  if model_config.discriminator == 'stylegan2' and (
      model_config.d_norm != 'none' or model_config.spectral_norm):
    raise ValueError(
        "model.discriminator='stylegan2' has no normalization layers; set "
        "model.d_norm='none' and model.spectral_norm=False.")
  if model_config.generator != 'stylegan2':
    return
  if isinstance(model_config.mapping_layers, bool) or not isinstance(
      model_config.mapping_layers, int) or model_config.mapping_layers < 1:
    raise ValueError(f'model.mapping_layers={model_config.mapping_layers!r} '
                     'must be a positive integer.')
  if not 0 <= model_config.style_mixing_prob <= 1:
    raise ValueError(f'model.style_mixing_prob='
                     f'{model_config.style_mixing_prob!r} must be in [0, 1].')


def resolve_conv_impl(conv_impl: str) -> str:
  """'auto' -> 'fast' on the CPU backend, 'xla' on GPU/TPU (fast already)."""
  _check_choice('model.conv_impl', conv_impl, CONV_IMPLS)
  if conv_impl == 'auto':
    return 'fast' if jax.default_backend() == 'cpu' else 'xla'
  return conv_impl


def _compute_dtype(dtype: Any) -> Any:
  try:
    dtype = jnp.dtype(dtype)
  except TypeError:
    dtype = None
  if dtype is None or dtype.name not in COMPUTE_DTYPES:
    raise ValueError(
        f'dtype={dtype!r} is not a compute dtype; valid choices: '
        f'{", ".join(COMPUTE_DTYPES)}.')
  return dtype


def create_generator(model_config: Any, resolution: int,
                     dtype: Any = jnp.float32,
                     num_attributes: int = 0) -> nn.Module:
  """The configured generator: z [B, latent_dim] -> images [B, R, R, 3].

  A conditional generator (num_attributes = A > 0) takes z joined with the
  signed labels, [B, latent_dim + A] (facegan_jax.conditioning).

  `module.apply(variables, z, train=...)` returns float32 images in [-1, 1].
  Variables: 'params', plus 'batch_stats' iff g_norm is 'batch' or
  'self_modulated' (train=True normalizes with batch statistics and needs
  mutable=['batch_stats']; train=False uses the running averages).

  Args:
    model_config: the config's `model` section.
    resolution: image side, a power of two in 32..256.
    dtype: compute dtype (float32 or bfloat16); parameters stay float32.
  """
  validate_model_config(model_config, resolution)
  if model_config.generator == 'stylegan2':
    return stylegan2.StyleGAN2Generator(
        resolution=resolution, width=model_config.g_width,
        latent_dim=model_config.latent_dim, num_attributes=num_attributes,
        mapping_layers=model_config.mapping_layers,
        style_mixing_prob=model_config.style_mixing_prob,
        conv_impl=resolve_conv_impl(model_config.conv_impl),
        dtype=_compute_dtype(dtype))
  kwargs = dict(resolution=resolution, width=model_config.g_width,
                norm=model_config.g_norm,
                conv_impl=resolve_conv_impl(model_config.conv_impl),
                dtype=_compute_dtype(dtype))
  if model_config.generator == 'dcgan':
    return dcgan.DCGANGenerator(
        precision=_matmul_precision(model_config),
        channels=(dcgan.parse_channels(model_config.g_channels, resolution)
                  if model_config.g_channels else ()),
        full_resolution_block=model_config.g_full_resolution_block,
        upsampling=model_config.g_upsampling, **kwargs)
  return resnet.ResNetGenerator(**kwargs)


def create_discriminator(model_config: Any, resolution: int,
                         dtype: Any = jnp.float32) -> nn.Module:
  """The configured discriminator: images [B, R, R, 3] -> scores [B].

  With model.d_pack = m > 1 it scores packs of m samples (PacGAN,
  packing.py): scores [B / m], B divisible by m, no labels.

  `module.apply(variables, x, train=...)` returns float32 raw scores.
  Variables: 'params', plus 'batch_stats' iff spectral_norm (power-iteration
  state) or d_norm == 'batch'. train=True updates that state (needs
  mutable=['batch_stats']); train=False is a pure, twice-differentiable
  function of x and the parameters.

  Args:
    model_config: the config's `model` section.
    resolution: image side, a power of two in 32..256.
    dtype: compute dtype (float32 or bfloat16); parameters stay float32.
  """
  validate_model_config(model_config, resolution)
  critic = _unpacked_discriminator(model_config, resolution,
                                   _compute_dtype(dtype))
  if model_config.d_pack > 1:
    return packing.PackedCritic(critic, model_config.d_pack)
  return critic


def _unpacked_discriminator(model_config: Any, resolution: int,
                            dtype: Any) -> nn.Module:
  if model_config.discriminator == 'stylegan2':
    return stylegan2.StyleGAN2Discriminator(
        resolution=resolution, width=model_config.d_width,
        conv_impl=resolve_conv_impl(model_config.conv_impl), dtype=dtype)
  kwargs = dict(width=model_config.d_width, norm=model_config.d_norm,
                spectral_norm=model_config.spectral_norm,
                conv_impl=resolve_conv_impl(model_config.conv_impl),
                dtype=dtype)
  if model_config.discriminator == 'dcgan':
    return dcgan.DCGANDiscriminator(
        resolution=resolution,
        precision=_matmul_precision(model_config),
        minibatch_stddev_group=model_config.d_minibatch_stddev, **kwargs)
  if model_config.discriminator == 'resnet':
    return resnet.ResNetDiscriminator(resolution=resolution, **kwargs)
  return small_cnn.SmallCNNDiscriminator(**kwargs)
