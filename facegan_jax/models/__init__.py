"""Generator and discriminator families and the fast layers they share.

Public entry points (the train step depends on exactly these):

  create_generator(model_config, resolution, dtype) -> nn.Module
  create_discriminator(model_config, resolution, dtype) -> nn.Module
  validate_model_config(model_config, resolution)
  GENERATORS, DISCRIMINATORS: valid model names.
  COMPUTE_DTYPES: valid compute dtypes (config.dtype).
  MIN_RESOLUTION, MAX_RESOLUTION, RESOLUTIONS: the image sides the models
    build (config.dataset.resolution); the input pipeline imports them.

Layers whose 'fast' implementation avoids XLA:CPU's slow convolution
derivatives (see docs/cpu_performance.md): conv.Conv, upsample.ConvTranspose,
upsample.UpsampleConv, downsample.ConvMeanPool. Only jax/flax/numpy are
imported here, so models run where TensorFlow is absent.
"""

from facegan_jax.models.factory import COMPUTE_DTYPES
from facegan_jax.models.factory import CONV_IMPLS
from facegan_jax.models.factory import create_discriminator
from facegan_jax.models.factory import create_generator
from facegan_jax.models.factory import D_NORMS
from facegan_jax.models.factory import DISCRIMINATORS
from facegan_jax.models.factory import G_NORMS
from facegan_jax.models.factory import GENERATORS
from facegan_jax.models.factory import MAX_RESOLUTION
from facegan_jax.models.factory import MIN_RESOLUTION
from facegan_jax.models.factory import RESOLUTIONS
from facegan_jax.models.factory import resolve_conv_impl
from facegan_jax.models.factory import validate_model_config

__all__ = [
    'COMPUTE_DTYPES', 'CONV_IMPLS', 'D_NORMS', 'DISCRIMINATORS', 'G_NORMS',
    'GENERATORS', 'MAX_RESOLUTION', 'MIN_RESOLUTION', 'RESOLUTIONS',
    'create_discriminator', 'create_generator',
    'resolve_conv_impl', 'validate_model_config',
]
