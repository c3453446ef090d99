"""StyleGAN2 generator and residual critic (Karras et al. 2020), any 32..256.

"Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), config
F: a mapping network z -> w, a synthesis network with weight-demodulated
modulated convolutions, per-pixel noise and a skip (toRGB-sum) output, and a
residual critic with a minibatch standard-deviation layer. Every weight has
an equalized learning rate (`modulated_conv.py`).

  G: z -> pixel norm -> `mapping_layers` dense (lr x0.01) -> w; w_avg tracks
     its mean (truncation); style mixing in training. Synthesis from a
     learned 4x4 constant: per resolution [up 2x + modulated 3x3 conv,]
     modulated 3x3 conv (each + noise + bias + lrelu), a modulated 1x1
     toRGB; the RGB images are upsampled and summed.
  D: fromRGB 1x1 -> residual blocks (3x3 conv, 3x3 conv + down; skip 1x1 +
     down; sum / sqrt 2) down to 4x4 -> minibatch stddev -> 3x3 conv ->
     dense -> dense to 1.

Channels are `width` at the image resolution and double per halving, capped
at 8 * width (width 64: 512 at 4x4 and 8x8, 64 at 64x64). The style vector
dimension w_dim defaults to latent_dim.

Simplifications against the paper's code:
  * No FIR low-pass filter in the convolution paths. The generator upsamples
    by nearest neighbour before its 3x3 convolution (the fused fast layer
    `upsample.upsample_conv_fast` on CPU); the critic's 3x3 convolution is
    followed by a 2x2 mean pool (`downsample.ConvMeanPool`'s strided form).
    The paper uses a [1, 3, 3, 1] blur around strided (transposed)
    convolutions. The skip RGB images are upsampled with that [1, 3, 3, 1]
    filter, i.e. bilinearly (edges replicated instead of zero-padded).
  * Style mixing draws a crossover per sample, not one per minibatch.
  * Minibatch-stddev groups are consecutive samples (local to a device under
    data parallelism), not strided ones.
  * No path-length regularization, lazy regularization or conv clamping;
    those belong to the loss / train step, or to float16 training.

Images have no final nonlinearity (as in the paper): values are unbounded,
of order a few units at initialization, and training pulls them toward the
data range [-1, 1]. Clip when saving.

rngs: 'noise' (fresh per-pixel noise per sample; without it a fixed
per-layer noise map is used, so inference needs no rng and is
deterministic) and 'style_mix' (style mixing, train=True only).
Variables: 'params', and 'batch_stats' {'w_avg': [w_dim], 'path_length_mean':
[]} in the generator.
"""

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from facegan_jax import conditioning
from facegan_jax.models import dcgan
from facegan_jax.models import minibatch_stddev
from facegan_jax.models import modulated_conv as mod

Array = jax.Array

# lrelu * sqrt(2) keeps the second moment of unit-variance inputs (He gain).
_ACTIVATION_GAIN = math.sqrt(2.0)
# Seed of the fixed noise maps used when no 'noise' rng is given.
_FIXED_NOISE_SEED = 0x5EED


def lrelu(x: Array) -> Array:
  """Leaky ReLU (slope 0.2) with gain sqrt(2)."""
  return nn.leaky_relu(x, 0.2) * jnp.asarray(_ACTIVATION_GAIN, x.dtype)


def side_channels(resolution: int, width: int) -> dict[int, int]:
  """{side: channels} for 4, 8, ..., resolution: width at the image side,
  doubling per halving, capped at 8 * width."""
  return {4 * 2 ** i: width * min(resolution // (4 * 2 ** i),
                                  dcgan.MAX_WIDTH_MULTIPLIER)
          for i in range(int(math.log2(resolution)) - 1)}


def num_ws(resolution: int) -> int:
  """Style vectors the synthesis network takes: 2 * log2(R) - 2.

  One per modulated 3x3 conv (2 per side, 1 at 4x4) plus the last toRGB;
  every other toRGB shares its w with the next side's first conv (as in the
  paper's code).
  """
  return 2 * int(math.log2(resolution)) - 2


def _check_resolution(resolution: int) -> None:
  if resolution < 8 or resolution & (resolution - 1):
    raise ValueError(f'resolution={resolution!r} must be a power of two '
                     '>= 8 (the models support 32..256).')


def upsample_bilinear(x: Array) -> Array:
  """2x upsampling with the separable [1, 3, 3, 1] / 4 filter, edges replicated.

  [B, H, W, C] -> [B, 2H, 2W, C]: output 2m is 3/4 x[m] + 1/4 x[m-1], output
  2m+1 is 3/4 x[m] + 1/4 x[m+1] (bilinear with half-pixel centres). Slices
  and adds only, cheap for the 3-channel skip images.
  """
  for axis in (1, 2):
    n = x.shape[axis]
    first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
    padded = jnp.concatenate([first, x, last], axis=axis)
    previous = jax.lax.slice_in_dim(padded, 0, n, axis=axis)
    following = jax.lax.slice_in_dim(padded, 2, n + 2, axis=axis)
    even = 0.75 * x + 0.25 * previous
    odd = 0.75 * x + 0.25 * following
    x = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    x = x.reshape(shape[:axis] + [2 * n] + shape[axis + 2:])
  return x


class MappingNetwork(nn.Module):
  """z [B, Z] -> w [B, w_dim] float32: pixel norm, then dense + lrelu layers.

  Attributes:
    w_dim: width of every layer and of w.
    num_layers: dense layers.
    lr_multiplier: equalized-lr multiplier of every layer (0.01: the
      mapping learns 100x slower than the synthesis network).
  """
  w_dim: int
  num_layers: int = 8
  lr_multiplier: float = 0.01

  @nn.compact
  def __call__(self, z: Array, labels: Array | None = None) -> Array:
    """z [B, Z] (and signed labels [B, A]) -> w [B, w_dim].

    Labels are embedded and both parts normalized before they are joined
    (as StyleGAN2-ADA conditions), so neither drowns the other.
    """
    x = _normalize_2nd_moment(z.astype(jnp.float32))
    if labels is not None:
      embedded = mod.EqualizedDense(self.w_dim, name='embed')(
          labels.astype(jnp.float32))
      x = jnp.concatenate([x, _normalize_2nd_moment(embedded)], axis=-1)
    for i in range(self.num_layers):
      x = lrelu(mod.EqualizedDense(self.w_dim, self.lr_multiplier,
                                   name=f'fc{i}')(x))
    return x


def _normalize_2nd_moment(x: Array) -> Array:
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) +
                           1e-8)


def mix_styles(w: Array, w_mix: Array, crossover: Array,
               num_layers: int) -> Array:
  """Per-sample style mixing: ws[b, l] = w[b] if l < crossover[b] else w_mix[b].

  Args:
    w: [B, w_dim].
    w_mix: [B, w_dim].
    crossover: [B] int, first layer fed w_mix (num_layers: none).
    num_layers: number of style vectors.

  Returns:
    ws [B, num_layers, w_dim].
  """
  use_mix = jnp.arange(num_layers)[None, :, None] >= crossover[:, None, None]
  return jnp.where(use_mix, w_mix[:, None, :], w[:, None, :])


class SynthesisLayer(nn.Module):
  """Modulated 3x3 conv, noise, bias, lrelu: (x, w) -> [B, H', W', features].

  Attributes:
    features: output channels.
    upsample: upsample 2x first.
    layer_index: position in the synthesis network; seeds the fixed noise.
    impl: 'fast' or 'xla'.
    dtype: compute dtype.
  """
  features: int
  upsample: bool
  layer_index: int
  impl: str
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, w: Array) -> Array:
    x = mod.ModulatedConv(self.features, 3, upsample=self.upsample,
                          impl=self.impl, dtype=self.dtype, name='conv')(x, w)
    b, h, wd, _ = x.shape
    if self.has_rng('noise'):
      noise = jax.random.normal(self.make_rng('noise'), (b, h, wd, 1))
    else:
      # One fixed map per layer, the same for every sample and call: images
      # depend on z alone.
      key = jax.random.fold_in(jax.random.key(_FIXED_NOISE_SEED),
                               self.layer_index)
      noise = jax.random.normal(key, (1, h, wd, 1))
    # Zero at init: the network decides how much stochastic detail to use.
    strength = self.param('noise_strength', nn.initializers.zeros, ())
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x = x + (noise * strength).astype(x.dtype) + bias.astype(x.dtype)
    return lrelu(x)


class ToRGB(nn.Module):
  """Modulated 1x1 conv to RGB, no demodulation: (x, w) -> [B, H, W, 3] f32."""
  impl: str
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, w: Array) -> Array:
    rgb = mod.ModulatedConv(3, 1, demodulate=False, impl=self.impl,
                            dtype=self.dtype, name='conv')(x, w)
    return rgb.astype(jnp.float32) + self.param('bias', nn.initializers.zeros,
                                                (3,))


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws(R), w_dim] -> images [B, R, R, 3] float32.

  Attributes:
    resolution: R.
    width: channels at R (see `side_channels`).
    conv_impl: 'fast' or 'xla'.
    dtype: compute dtype.
  """
  resolution: int
  width: int
  conv_impl: str
  dtype: Any

  @nn.compact
  def __call__(self, ws: Array) -> Array:
    _check_resolution(self.resolution)
    if ws.shape[1] != num_ws(self.resolution):
      raise ValueError(f'ws has {ws.shape[1]} style vectors; resolution '
                       f'{self.resolution} takes {num_ws(self.resolution)}.')
    layer_args = dict(impl=self.conv_impl, dtype=self.dtype)
    sides = side_channels(self.resolution, self.width)
    const = self.param('const', mod.UNIT_NORMAL_INIT, (4, 4, sides[4]))
    x = jnp.broadcast_to(const.astype(self.dtype),
                         (ws.shape[0],) + const.shape)
    image = None
    w_index = 0
    for side, features in sides.items():
      if side > 4:
        x = SynthesisLayer(features, True, w_index, name=f'b{side}_conv0',
                           **layer_args)(x, ws[:, w_index])
        w_index += 1
      x = SynthesisLayer(features, False, w_index, name=f'b{side}_conv1',
                         **layer_args)(x, ws[:, w_index])
      w_index += 1
      rgb = ToRGB(name=f'b{side}_torgb', **layer_args)(x, ws[:, w_index])
      image = rgb if image is None else upsample_bilinear(image) + rgb
    return image


class StyleGAN2Generator(nn.Module):
  """z [B, latent_dim] -> images [B, R, R, 3] float32 (about [-1, 1]).

  Attributes:
    resolution: R, a power of two in 32..256 (>= 8 works).
    width: channels at R; doubling per halving, capped at 8 * width.
    latent_dim: size of z.
    num_attributes: A of a conditional generator, whose input is z joined
      with signed labels, [B, latent_dim + A] (facegan_jax.conditioning).
    w_dim: size of w (None: latent_dim).
    mapping_layers: dense layers of the mapping network.
    mapping_lr_multiplier: their equalized-lr multiplier.
    style_mixing_prob: probability that a training sample mixes two w's.
    w_avg_beta: decay of the tracked mean of w (batch_stats 'w_avg').
    conv_impl: 'fast' or 'xla'.
    dtype: compute dtype of the synthesis network; parameters, the mapping
      network, styles and output stay float32.
  """
  # Truncation pulls w (not z) towards its average (train_step.make_sample_fn).
  truncation_space: ClassVar[str] = 'w'
  resolution: int = 64
  width: int = 64
  latent_dim: int = 128
  num_attributes: int = 0
  w_dim: int | None = None
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  style_mixing_prob: float = 0.9
  w_avg_beta: float = 0.995
  conv_impl: str = 'fast'
  dtype: Any = jnp.float32

  def setup(self):
    w_dim = self.w_dim or self.latent_dim
    self.mapping = MappingNetwork(w_dim, self.mapping_layers,
                                  self.mapping_lr_multiplier)
    self.synthesis = SynthesisNetwork(self.resolution, self.width,
                                      self.conv_impl, self.dtype)
    self.w_avg = self.variable('batch_stats', 'w_avg', jnp.zeros, (w_dim,),
                               jnp.float32)
    # Running mean of the path lengths, the target of the path length
    # regularization (train_step; loss.path_length_weight).
    self.variable('batch_stats', 'path_length_mean', jnp.zeros, (),
                  jnp.float32)

  def __call__(self, z: Array, *, train: bool,
               truncation_psi: float | Array = 1.0) -> Array:
    """Generates images from z [B, latent_dim]; see `map_to_ws` for modes.

    Returns:
      [B, R, R, 3] float32, no final nonlinearity.
    """
    return self.synthesis(self.map_to_ws(z, train=train,
                                         truncation_psi=truncation_psi))

  def map_to_ws(self, z: Array, *, train: bool,
                truncation_psi: float | Array = 1.0) -> Array:
    """The per-layer style vectors ws [B, num_ws(R), w_dim] of z [B, Z].

    train=True updates batch_stats 'w_avg' from this batch (needs
    mutable=['batch_stats']) and, with a 'style_mix' rng, mixes styles.
    truncation_psi != 1 pulls every w toward w_avg: w_avg + psi (w - w_avg).
    """
    width = self.latent_dim + self.num_attributes
    if z.ndim != 2 or z.shape[-1] != width:
      raise ValueError(f'z has shape {z.shape}; expected [B, {width}] '
                       '(latent_dim + num_attributes).')
    z, labels = z[:, :self.latent_dim], z[:, self.latent_dim:]
    labels = labels if self.num_attributes else None
    w = self.mapping(z, labels)
    if train and not self.is_initializing():
      batch_mean = jax.lax.stop_gradient(jnp.mean(w, axis=0))
      self.w_avg.value = batch_mean + self.w_avg_beta * (self.w_avg.value -
                                                         batch_mean)
    layers = num_ws(self.resolution)
    ws = jnp.broadcast_to(w[:, None, :], (w.shape[0], layers, w.shape[1]))
    if train and self.style_mixing_prob > 0 and self.has_rng('style_mix'):
      z_key, mix_key, crossover_key = jax.random.split(
          self.make_rng('style_mix'), 3)
      # Layers from the crossover on follow a second latent, so the network
      # cannot assume neighbouring layers share a style.
      w_mix = self.mapping(jax.random.normal(z_key, z.shape, z.dtype), labels)
      mixes = (jax.random.uniform(mix_key, (z.shape[0],)) <
               self.style_mixing_prob)
      crossover = jax.random.randint(crossover_key, (z.shape[0],), 1, layers)
      ws = mix_styles(w, w_mix, jnp.where(mixes, crossover, layers), layers)
    if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
      w_avg = self.w_avg.value
      ws = w_avg + truncation_psi * (ws - w_avg)
    return ws

  def synthesize(self, ws: Array) -> Array:
    """ws [B, num_ws(R), w_dim] -> images [B, R, R, 3] float32."""
    return self.synthesis(ws)


class DiscriminatorBlock(nn.Module):
  """Residual block that halves resolution: [B, H, W, C] -> [B, H/2, W/2, F]."""
  features: int
  conv_impl: str
  dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    layer_args = dict(impl=self.conv_impl, dtype=self.dtype)
    skip = mod.EqualizedConv(self.features, (1, 1), down=True, use_bias=False,
                             name='skip', **layer_args)(x)
    h = lrelu(mod.EqualizedConv(x.shape[-1], (3, 3), name='conv0',
                                **layer_args)(x))
    h = lrelu(mod.EqualizedConv(self.features, (3, 3), down=True,
                                name='conv1', **layer_args)(h))
    # 1/sqrt(2) keeps the sum's variance that of each branch.
    return (skip + h) * jnp.asarray(math.sqrt(0.5), h.dtype)


class StyleGAN2Discriminator(nn.Module):
  """images [B, R, R, 3] -> scores [B] float32.

  The minibatch-stddev layer couples the samples of each group: a score
  depends on its group mates, and the batch size must be divisible by
  min(mbstd_group_size, B).

  Attributes:
    resolution: R, a power of two in 32..256 (>= 8 works).
    width: channels at R; doubling per halving, capped at 8 * width.
    conv_impl: 'fast' or 'xla'.
    dtype: compute dtype; parameters stay float32.
    mbstd_group_size: samples per minibatch-stddev group.
    mbstd_channels: features the minibatch-stddev layer adds.
  """
  resolution: int = 64
  width: int = 64
  conv_impl: str = 'fast'
  dtype: Any = jnp.float32
  mbstd_group_size: int = 4
  mbstd_channels: int = 1

  @nn.compact
  def __call__(self, x: Array, labels: Array | None = None, *,
               train: bool) -> Array:
    """Scores images; `train` is accepted for the common signature only.

    labels [B, A] (0/1) adds the projection head of a conditional critic.
    """
    del train  # No state: the critic is the same function in both modes.
    _check_resolution(self.resolution)
    layer_args = dict(impl=self.conv_impl, dtype=self.dtype)
    sides = side_channels(self.resolution, self.width)
    x = x.astype(self.dtype)
    x = lrelu(mod.EqualizedConv(sides[self.resolution], (1, 1),
                                name='from_rgb', **layer_args)(x))
    side = self.resolution
    while side > 4:
      x = DiscriminatorBlock(sides[side // 2], self.conv_impl, self.dtype,
                             name=f'b{side}')(x)
      side //= 2
    x = minibatch_stddev.append(x, self.mbstd_group_size, self.mbstd_channels)
    x = lrelu(mod.EqualizedConv(sides[4], (3, 3), name='b4_conv',
                                **layer_args)(x))
    features = lrelu(mod.EqualizedDense(sides[4], dtype=self.dtype,
                                        name='b4_fc')(
                                            x.reshape(x.shape[0], -1)))
    scores = mod.EqualizedDense(1, dtype=self.dtype, name='b4_out')(features)
    return conditioning.with_projection(scores, features, labels, self.dtype)
