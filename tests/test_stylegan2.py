"""StyleGAN2 generator and critic: shapes, modulation, styles, noise, HLO.

Tiny widths (8 channels at 32x32, z and w of 16, two mapping layers). The
generator's variables are initialized once per module, the model
computations of a test run inside one or two compiled functions (op-by-op
execution compiles each primitive separately and is slower on this CPU),
and 64..256 are checked with jax.eval_shape only: compilation dominates the
time on 2 cores.
"""

import functools
import math
import re

import flax
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from facegan_jax.models import minibatch_stddev
from facegan_jax.models import modulated_conv as mod
from facegan_jax.models import stylegan2
from facegan_jax.models import upsample
from tests.arrays import float32_matmuls  # pylint: disable=unused-import
from tests.arrays import normal as _normal

_jit = functools.partial(
    jax.jit, compiler_options={'xla_backend_optimization_level': 0})

RES = 32
WIDTH = 8
LATENT = 16
BATCH = 4


def _generator(**overrides):
  kwargs = dict(resolution=RES, width=WIDTH, latent_dim=LATENT,
                mapping_layers=2)
  return stylegan2.StyleGAN2Generator(**{**kwargs, **overrides})


def _discriminator(**overrides):
  return stylegan2.StyleGAN2Discriminator(
      **{**dict(resolution=RES, width=WIDTH), **overrides})


@pytest.fixture(scope='module')
def g_vars():
  """Variables of `_generator()` (any mixing probability) with a random w_avg.

  Initialized once for the module; a non-zero w_avg makes the update and
  truncation checks meaningful.
  """
  variables = _jit(functools.partial(_generator().init, train=False))(
      jax.random.key(0), jnp.zeros((1, LATENT)))
  return {**variables,
          'batch_stats': {**variables['batch_stats'],
                          'w_avg': jnp.asarray(_normal(7, (LATENT,)))}}


@pytest.mark.parametrize('resolution', [32, 64, 128, 256])
def test_output_shapes_and_dtypes_at_every_resolution(resolution):
  for dtype in (jnp.float32, jnp.bfloat16):
    g = _generator(resolution=resolution, dtype=dtype)
    d = _discriminator(resolution=resolution, dtype=dtype)
    z = jax.ShapeDtypeStruct((BATCH, LATENT), jnp.float32)
    images, g_vars = jax.eval_shape(
        functools.partial(g.init_with_output, train=False), jax.random.key(0),
        z)
    scores, d_vars = jax.eval_shape(
        functools.partial(d.init_with_output, train=False), jax.random.key(0),
        images)
    assert images.shape == (BATCH, resolution, resolution, 3)
    assert images.dtype == jnp.float32
    assert scores.shape == (BATCH,) and scores.dtype == jnp.float32
    assert set(g_vars) == {'params', 'batch_stats'}
    assert jax.tree.map(lambda a: a.shape, g_vars['batch_stats']) == {
        'w_avg': (LATENT,), 'path_length_mean': ()}
    assert set(d_vars) == {'params'}
    for leaf in jax.tree.leaves((g_vars, d_vars)):
      assert leaf.dtype == jnp.float32  # Parameters whatever the compute.
  sides = int(math.log2(resolution)) - 1  # 4, 8, ..., resolution.
  synthesis = g_vars['params']['synthesis']
  assert len([k for k in synthesis if k.endswith('torgb')]) == sides
  assert synthesis[f'b{resolution}_conv1']['conv']['kernel'].shape == (
      3, 3, WIDTH, WIDTH)
  assert synthesis['const'].shape == (4, 4, 8 * WIDTH)  # The channel cap.
  assert d_vars['params']['b4_conv']['kernel'].shape == (
      3, 3, 8 * WIDTH + 1, 8 * WIDTH)  # + the minibatch-stddev feature.


def test_forward_at_32_fast_matches_xla(g_vars):
  """Real forward passes; the same function with either conv impl."""
  z = _normal(1, (BATCH, LATENT))

  @_jit
  def run(g_vars, z):
    d_vars = _discriminator().init(jax.random.key(3),
                                   jnp.zeros((BATCH, RES, RES, 3)),
                                   train=False)
    outputs = []
    for impl in ('fast', 'xla'):
      g, d = _generator(conv_impl=impl), _discriminator(conv_impl=impl)
      images = g.apply(g_vars, z, train=False)
      scores, vjp = jax.vjp(lambda x, d=d: d.apply(d_vars, x, train=False),
                            images)
      outputs.append((images, scores, vjp(jnp.ones_like(scores))[0]))
    return outputs

  fast, xla = run(g_vars, z)
  images, scores, _ = fast
  assert images.shape == (BATCH, RES, RES, 3) and images.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(images))) and float(jnp.std(images)) > 0
  assert scores.shape == (BATCH,) and scores.dtype == jnp.float32
  assert len(set(np.asarray(scores).tolist())) == BATCH
  for got, want in zip(fast, xla):
    np.testing.assert_allclose(got, want, rtol=1e-4,
                               atol=1e-4 * float(jnp.max(jnp.abs(want))))


def _per_sample_kernel_conv(x, kernel, styles, demodulate, up):
  """The paper's definition: each sample convolved with its own kernel."""

  def one(x, s):
    k = kernel * s[None, None, :, None]
    if demodulate:
      k = k * lax.rsqrt(jnp.sum(k * k, axis=(0, 1, 2)) + 1e-8)
    x = x[None]
    if up:
      x = upsample.upsample_nearest(x)
    return lax.conv_general_dilated(
        x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[0]

  return jax.vmap(one)(x, styles)


@pytest.mark.parametrize('impl', ['fast', 'xla'])
def test_modulated_conv_is_the_per_sample_kernel_convolution(impl):
  # (kernel size, demodulate, upsample): synthesis convs and toRGB.
  cases = [(3, True, False), (3, True, True), (1, False, False)]
  x = _normal(0, (3, 5, 6, 4))
  kernels = [_normal(1, (k, k, 4, 5)) for k, _, _ in cases]
  styles = _normal(2, (3, 4)) + 1.0
  weights = [_normal(3, (3, 10 if up else 5, 12 if up else 6, 5))
             for _, _, up in cases]

  def derivatives(fn, kernel, weight):
    loss = lambda x, k, s: jnp.sum(jnp.tanh(fn(x, k, s)) * weight)
    return fn(x, kernel, styles), jax.grad(loss, argnums=(0, 1, 2))(
        x, kernel, styles)

  @_jit
  def run(kernels):
    results = []
    for (_, demodulate, up), kernel, weight in zip(cases, kernels, weights):
      ours = functools.partial(mod.modulated_conv2d, demodulate=demodulate,
                               upsample=up, impl=impl)
      reference = functools.partial(_per_sample_kernel_conv,
                                    demodulate=demodulate, up=up)
      results.append((derivatives(ours, kernel, weight),
                      derivatives(reference, kernel, weight)))
    return results

  for case, (ours, reference) in zip(cases, run(kernels)):
    for name, got, want in zip(('value', 'd/dx', 'd/dkernel', 'd/dstyles'),
                               jax.tree.leaves(ours),
                               jax.tree.leaves(reference)):
      scale = float(jnp.max(jnp.abs(want)))
      assert scale > 0, (case, name)
      np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale,
                                 err_msg=f'{case} {name}')


def test_demodulation_gives_unit_variance_outputs():
  x = _normal(0, (4, 32, 32, 64))  # i.i.d. unit variance.
  kernel = _normal(1, (3, 3, 64, 16), scale=3.0)  # Any scale: it cancels.
  styles = np.random.default_rng(2).uniform(0.2, 3.0, (4, 64)).astype(
      np.float32)
  y = _jit(mod.modulated_conv2d)(x, kernel, styles)
  interior = np.asarray(y)[:, 1:-1, 1:-1, :]  # 'SAME' borders see zeros.
  second_moment = np.mean(np.square(interior), axis=(1, 2))  # [B, Cout]
  assert abs(second_moment.mean() - 1.0) < 0.1
  np.testing.assert_allclose(second_moment, 1.0, atol=0.3)


def test_mix_styles_switches_to_the_second_w_at_the_crossover():
  w, w_mix = _normal(0, (3, 2)), _normal(1, (3, 2))
  ws = stylegan2.mix_styles(w, w_mix, jnp.array([1, 3, 4]), 4)
  for b, crossover in enumerate([1, 3, 4]):
    for layer in range(4):
      want = w[b] if layer < crossover else w_mix[b]
      np.testing.assert_array_equal(ws[b, layer], want)


def test_style_mixing_feeds_the_first_w_before_the_crossover_only(g_vars):
  g = _generator(style_mixing_prob=1.0)
  z = _normal(1, (8, LATENT))
  layers = stylegan2.num_ws(RES)
  rngs = {'style_mix': jax.random.key(5)}

  @_jit
  def run(g_vars, z):
    w = g.apply(g_vars, z, train=False, method='map_to_ws')
    mixed, _ = g.apply(g_vars, z, train=True, rngs=rngs,
                       mutable=['batch_stats'], method='map_to_ws')
    images, _ = g.apply(g_vars, z, train=True, rngs=rngs,
                        mutable=['batch_stats'])
    no_rng, _ = g.apply(g_vars, z, train=True, mutable=['batch_stats'],
                        method='map_to_ws')
    inference = g.apply(g_vars, z, train=False, rngs=rngs, method='map_to_ws')
    return (w, mixed, images, g.apply(g_vars, mixed, method='synthesize'),
            no_rng, inference)

  w, mixed, images, synthesized, no_rng, inference = run(g_vars, z)
  w = np.asarray(w)
  # Without mixing every layer gets the same w.
  for ws in (w, no_rng, inference):
    np.testing.assert_array_equal(ws, np.broadcast_to(w[:, :1], ws.shape))
  crossovers = []
  for b in range(z.shape[0]):
    same = np.all(np.asarray(mixed[b]) == w[b, 0], axis=-1)
    crossover = int(np.argmin(same))  # First layer not fed w1.
    assert 1 <= crossover < layers
    assert same[:crossover].all() and not same[crossover:].any()
    np.testing.assert_array_equal(
        mixed[b, crossover:],
        np.broadcast_to(mixed[b, crossover], mixed[b, crossover:].shape))
    crossovers.append(crossover)
  assert len(set(crossovers)) > 1  # Per-sample crossovers.
  # The generator draws exactly these styles and synthesizes them.
  np.testing.assert_array_equal(images, synthesized)


def test_each_synthesis_layer_reads_its_own_style_vector(g_vars):
  """Perturbing style j changes the styles of exactly the layers fed ws[j].

  Layer -> index, as in the paper's code: at side 4 * 2**level, conv0 reads
  2 level - 1, conv1 2 level, toRGB 2 level + 1 (shared with the next
  side's conv0).
  """
  g = _generator()
  layers = stylegan2.num_ws(RES)
  base = _normal(0, (1, layers, LATENT))
  ws = np.repeat(base, layers + 1, axis=0)
  for j in range(layers):
    ws[j + 1, j] += 1.0  # Sample j + 1 differs from sample 0 in ws[j] only.

  _, state = _jit(lambda v, ws: g.apply(
      v, ws, method='synthesize', mutable=['intermediates'],
      capture_intermediates=lambda module, _: module.name == 'affine'))(
          g_vars, ws)
  seen = {}
  for path, styles in jax.tree_util.tree_leaves_with_path(
      state['intermediates']):
    name = next(p.key for p in path if re.fullmatch(r'b\d+_\w+', str(
        getattr(p, 'key', ''))))
    side, kind = re.fullmatch(r'b(\d+)_(\w+)', name).groups()
    level = int(math.log2(int(side))) - 2
    expected = {'conv0': 2 * level - 1, 'conv1': 2 * level,
                'torgb': 2 * level + 1}[kind]
    changed = [j for j in range(layers)
               if float(jnp.max(jnp.abs(styles[j + 1] - styles[0]))) > 1e-4]
    seen[name] = changed
    assert changed == [expected], name
  assert len(seen) == 3 * (int(math.log2(RES)) - 1) - 1


def test_w_avg_update_and_truncation(g_vars):
  g = _generator(style_mixing_prob=1.0)
  w_avg = np.asarray(g_vars['batch_stats']['w_avg'])
  z = _normal(1, (BATCH, LATENT))

  @_jit
  def run(g_vars, z):
    map_to_ws = functools.partial(g.apply, g_vars, z, method='map_to_ws')
    _, trained = map_to_ws(train=True, mutable=['batch_stats'],
                           rngs={'style_mix': jax.random.key(1)})
    _, inferred = map_to_ws(train=False, mutable=['batch_stats'])
    return (map_to_ws(train=False), trained, inferred,
            map_to_ws(train=False, truncation_psi=0.5),
            map_to_ws(train=False, truncation_psi=1.0),
            map_to_ws(train=False, truncation_psi=0.0),
            g.apply(g_vars, z, train=False, truncation_psi=0.0))

  ws, trained, inferred, half, psi1, psi0, psi0_images = run(g_vars, z)
  w = np.asarray(ws)[:, 0]
  batch_mean = w.mean(axis=0)
  # From the mapped batch only (style mixing's second w does not count).
  np.testing.assert_allclose(
      trained['batch_stats']['w_avg'],
      batch_mean + 0.995 * (w_avg - batch_mean), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(inferred['batch_stats']['w_avg'], w_avg)
  np.testing.assert_allclose(half, w_avg + 0.5 * (ws - w_avg), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(psi1, ws)
  # psi = 0: every z gives the image of w_avg.
  np.testing.assert_allclose(psi0, np.broadcast_to(w_avg, psi0.shape),
                             rtol=1e-6)
  assert float(jnp.std(psi0_images)) > 0
  for image in psi0_images:
    np.testing.assert_allclose(image, psi0_images[0], atol=1e-5)


def test_noise_is_fixed_without_rng_and_fresh_with_one(g_vars):
  g = _generator()
  # Noise strengths start at zero; switch the noise on.
  params = flax.traverse_util.flatten_dict(g_vars['params'])
  assert any(k[-1] == 'noise_strength' for k in params)
  noisy = {**g_vars, 'params': flax.traverse_util.unflatten_dict(
      {k: (jnp.full_like(v, 0.5) if k[-1] == 'noise_strength' else v)
       for k, v in params.items()})}
  # One latent for the whole batch: only the noise can tell samples apart.
  z = np.repeat(_normal(1, (1, LATENT)), BATCH, axis=0)
  fixed_noise = _jit(lambda v, z: g.apply(v, z, train=False))
  fresh_noise = _jit(lambda v, z, key: g.apply(v, z, train=False,
                                               rngs={'noise': key}))

  silent, fixed = fixed_noise(g_vars, z), fixed_noise(noisy, z)
  # No rng: one fixed map per layer, the same for every sample.
  assert float(jnp.max(jnp.abs(fixed - silent))) > 1e-2  # It is used.
  for image in fixed:
    np.testing.assert_allclose(image, fixed[0], atol=1e-5)
  key1 = fresh_noise(noisy, z, jax.random.key(1))
  key2 = fresh_noise(noisy, z, jax.random.key(2))
  np.testing.assert_array_equal(key1, fresh_noise(noisy, z,
                                                  jax.random.key(1)))
  assert float(jnp.max(jnp.abs(key1 - key2))) > 1e-2
  assert float(jnp.max(jnp.abs(key1[0] - key1[1]))) > 1e-2  # Per sample.


def test_equalized_lr_effective_weights():
  dense = mod.EqualizedDense(64, lr_multiplier=0.01)
  conv = mod.EqualizedConv(3, (3, 3))
  to_rgb = mod.ModulatedConv(3, 1, demodulate=False)
  x_dense = np.eye(256, dtype=np.float32)
  # One-hot pixels at the centre of 3x3 images, one per input channel.
  x_conv = np.zeros((2, 3, 3, 2), np.float32)
  x_conv[0, 1, 1, 0] = x_conv[1, 1, 1, 1] = 1
  x_rgb, w = _normal(0, (2, 2, 2, 5)), _normal(1, (2, 6))

  @_jit
  def run():
    dense_vars = dense.init(jax.random.key(0), x_dense)
    conv_vars = conv.init(jax.random.key(1), x_conv)
    rgb_vars = to_rgb.init(jax.random.key(2), x_rgb, w)
    return (dense_vars, dense.apply(dense_vars, x_dense),
            dense.apply(dense_vars, 0 * x_dense), conv_vars,
            conv.apply(conv_vars, x_conv), rgb_vars,
            to_rgb.apply(rgb_vars, x_rgb, w))

  (dense_vars, dense_y, dense_bias, conv_vars, conv_y, rgb_vars,
   rgb_y) = run()
  kernel = np.asarray(dense_vars['params']['kernel'])
  # Stored N(0, 1 / 0.01^2); effective N(0, 1 / fan_in).
  assert abs(kernel.std() - 100.0) < 2.0
  np.testing.assert_allclose(dense_y - dense_bias, kernel * 0.01 / 16.0,
                             rtol=1e-5, atol=1e-6)
  # Conv: the output of a one-hot pixel is the (flipped) effective kernel.
  conv_kernel = np.asarray(conv_vars['params']['kernel'])
  conv_bias = np.asarray(conv_vars['params']['bias'])
  effective = conv_kernel / math.sqrt(3 * 3 * 2)
  for c in range(2):
    np.testing.assert_allclose(conv_y[c] - conv_bias,
                               effective[::-1, ::-1, c, :], rtol=1e-5,
                               atol=1e-6)
  # Modulated toRGB: affine (bias 1) and kernel both use their gains.
  params = rgb_vars['params']
  styles = (w @ params['affine']['kernel'] / math.sqrt(6) +
            params['affine']['bias'])
  np.testing.assert_allclose(params['affine']['bias'], 1.0)
  want = np.einsum('bhwi,bi,io->bhwo', x_rgb, styles,
                   params['kernel'][0, 0] / math.sqrt(5))
  np.testing.assert_allclose(rgb_y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != 'cpu',
                    reason='inspects the XLA:CPU lowering')
@pytest.mark.parametrize('impl', ['fast', 'xla'])
def test_critic_r1_gradient_hlo_has_convolutions_only_for_xla(impl):
  """Parameters' gradient of a per-sample R1 penalty: slices and matmuls.

  No convolution at all on the fast path, so none with a reversed window
  (`rhs_reversal`, XLA:CPU's slow second-order path). The 'xla' run is the
  control: it shows the check can see convolutions (its stride-1 3x3 ones
  lower to reverse + convolution rather than rhs_reversal).
  """
  d = _discriminator(width=4, conv_impl=impl)
  x = _normal(0, (BATCH, RES, RES, 3))
  variables = jax.eval_shape(functools.partial(d.init, train=False),
                             jax.random.key(0), x)

  def r1(variables, x):
    grads = jax.grad(lambda x: d.apply(variables, x, train=False).sum())(x)
    return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))

  hlo = _jit(jax.grad(r1)).lower(variables, x).compile().as_text()
  if impl == 'fast':
    assert 'dot(' in hlo
    assert 'convolution(' not in hlo  # Not even a well-behaved one.
    assert 'rhs_reversal' not in hlo
  else:
    assert 'convolution(' in hlo


def test_minibatch_stddev():
  x = _normal(0, (8, 2, 3, 4))
  # Identical samples within each group of 4: zero spread.
  same = np.repeat(x[::4], 4, axis=0)
  features = np.asarray(_jit(minibatch_stddev.append)(same))
  assert features.shape == (8, 2, 3, 5)
  np.testing.assert_array_equal(features[..., :4], same)
  np.testing.assert_allclose(features[..., 4], 0.0, atol=2e-4)  # sqrt(1e-8).
  # Otherwise: std over each group of 2 consecutive samples, averaged over
  # pixels and each half of the channels.
  features = _jit(functools.partial(minibatch_stddev.append, group_size=2,
                                    num_channels=2))(x)
  std = np.sqrt(x.reshape(4, 2, 2, 3, 2, 2).var(axis=1) + 1e-8)
  want = np.repeat(std.mean(axis=(1, 2, 4)), 2, axis=0)  # [B, 2]
  np.testing.assert_allclose(features[..., 4:],
                             np.broadcast_to(want[:, None, None, :],
                                             (8, 2, 3, 2)), rtol=1e-5)
  with pytest.raises(ValueError, match='batch size divisible'):
    minibatch_stddev.append(x[:6])
  assert minibatch_stddev.append(x[:3], group_size=4).shape == (3, 2, 3, 5)


def test_skip_upsampling_is_bilinear():
  x = _normal(0, (2, 4, 5, 3))
  ours, reference = _jit(lambda x: (stylegan2.upsample_bilinear(x),
                                    jax.image.resize(x, (2, 8, 10, 3),
                                                     'bilinear')))(x)
  np.testing.assert_allclose(ours, reference, atol=1e-5)
