"""Generators and discriminators: shapes, ranges, state, fast == xla, errors.

Tiny widths and batches; every model computation runs inside one compiled
function per test (op-by-op execution compiles each primitive separately
and is slower on this CPU). 128 and 256 are checked with jax.eval_shape.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from facegan_jax import models
from facegan_jax.models import dcgan
from facegan_jax.models import normalization
from facegan_jax.models import packing

_jit = functools.partial(
    jax.jit, compiler_options={'xla_backend_optimization_level': 0})


@pytest.fixture(autouse=True)
def _float32_matmuls():
  """GPUs default to TF32 matmuls/convs; the comparisons assume float32."""
  with jax.default_matmul_precision('highest'):
    yield

BATCH = 2
LATENT = 8


def _config(**overrides) -> ml_collections.ConfigDict:
  """The `model` section with tiny widths (keys as in configs/default.py)."""
  keys = dict(
      generator='dcgan', discriminator='dcgan', latent_dim=LATENT,
      g_width=2, d_width=2, g_norm='batch', d_norm='none',
      spectral_norm=False, d_minibatch_stddev=0, conv_impl='fast',
      g_full_resolution_block=False, g_upsampling='transposed', d_pack=1,
      g_channels='', matmul_inputs='float32')
  return ml_collections.ConfigDict({**keys, **overrides})


def _z(seed=0, batch=BATCH):
  return jax.random.normal(jax.random.key(seed), (batch, LATENT))


def _images(resolution, seed=1, batch=BATCH):
  return jax.random.uniform(jax.random.key(seed),
                            (batch, resolution, resolution, 3), minval=-1,
                            maxval=1)


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def _assert_images(images, resolution):
  assert images.shape == (BATCH, resolution, resolution, 3)
  assert images.dtype == jnp.float32
  assert bool(jnp.all(jnp.abs(images) <= 1.0))
  assert float(jnp.std(images)) > 0  # Not a constant image.


# The ResNet generator at 64 is checked the same way in the fast == xla test.
@pytest.mark.parametrize('name,resolution', [('dcgan', 32), ('dcgan', 64)])
def test_generator_images_in_range(name, resolution):
  generator = models.create_generator(_config(generator=name), resolution)

  @_jit
  def run(z):
    variables = generator.init(jax.random.key(0), z, train=False)
    images, _ = generator.apply(variables, z, train=True,
                                mutable=['batch_stats'])
    return images, generator.apply(variables, z, train=False)

  for images in run(_z()):
    _assert_images(images, resolution)


@pytest.mark.parametrize('name,resolution', [
    ('dcgan', 32), ('dcgan', 64), ('resnet', 64), ('small_cnn', 32)])
def test_discriminator_scores_shape(name, resolution):
  discriminator = models.create_discriminator(
      _config(discriminator=name), resolution)

  @_jit
  def run(x):
    variables = discriminator.init(jax.random.key(0), x, train=False)
    return variables, discriminator.apply(variables, x, train=False)

  variables, scores = run(_images(resolution))
  assert set(variables) == {'params'}  # No norm, no spectral norm.
  assert scores.shape == (BATCH,)
  assert scores.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(scores)))
  assert float(scores[0]) != float(scores[1])


@pytest.mark.parametrize('resolution', [128, 256])
@pytest.mark.parametrize('generator,discriminator', [
    ('dcgan', 'dcgan'), ('resnet', 'resnet'), ('dcgan', 'small_cnn')])
def test_large_resolutions_shapes(resolution, generator, discriminator):
  config = _config(generator=generator, discriminator=discriminator)
  g = models.create_generator(config, resolution)
  d = models.create_discriminator(config, resolution)
  images, _ = jax.eval_shape(
      functools.partial(g.init_with_output, train=False), jax.random.key(0),
      _z())
  assert images.shape == (BATCH, resolution, resolution, 3)
  scores, _ = jax.eval_shape(
      functools.partial(d.init_with_output, train=False), jax.random.key(0),
      images)
  assert scores.shape == (BATCH,)


def test_dcgan64_matches_the_pytorch_reference_architecture():
  # shared/bench/torch_wgan_gp_reference.py: G 512-256-128-64 channels, D
  # 64-128-256-512, 4x4 kernels; no biases before batch norm.
  config = _config(latent_dim=128, g_width=64, d_width=64)
  g = models.create_generator(config, 64)
  d = models.create_discriminator(config, 64)
  g_vars = jax.eval_shape(functools.partial(g.init, train=False),
                          jax.random.key(0), jnp.zeros((1, 128)))
  d_vars = jax.eval_shape(functools.partial(d.init, train=False),
                          jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  g_params = _shapes(g_vars['params'])
  assert g_params['project'] == {'kernel': (128, 4 * 4 * 512)}
  assert g_params['up_0'] == {'kernel': (4, 4, 512, 256)}
  assert g_params['up_1'] == {'kernel': (4, 4, 256, 128)}
  assert g_params['up_2'] == {'kernel': (4, 4, 128, 64)}
  assert g_params['to_rgb'] == {'kernel': (4, 4, 64, 3), 'bias': (3,)}
  d_params = _shapes(d_vars['params'])
  for i, (cin, cout) in enumerate([(3, 64), (64, 128), (128, 256),
                                   (256, 512)]):
    assert d_params[f'down_{i}'] == {'kernel': (4, 4, cin, cout),
                                     'bias': (cout,)}
  assert d_params['score'] == {'kernel': (4, 4, 512, 1), 'bias': (1,)}
  # Parameter counts of the PyTorch modules (BatchNorm affine included).
  count = lambda tree: sum(np.prod(a.shape) for a in jax.tree.leaves(tree))
  assert count(g_vars['params']) == 3_806_083
  assert count(d_vars['params']) == 2_764_737


def test_full_resolution_block_adds_a_hidden_block_at_full_resolution():
  # SNGAN's CNN generator at 32x32: 4x4x256 -> 8x8x128 -> 16x16x64 ->
  # 32x32x32 (transposed convs, batch norm, ReLU) -> 3x3 conv -> RGB.
  g = models.create_generator(
      _config(latent_dim=128, g_width=64, g_full_resolution_block=True), 32)
  images, g_vars = jax.eval_shape(
      functools.partial(g.init_with_output, train=False), jax.random.key(0),
      jnp.zeros((1, 128)))
  assert images.shape == (1, 32, 32, 3)
  g_params = _shapes(g_vars['params'])
  assert g_params['up_0'] == {'kernel': (4, 4, 256, 128)}
  assert g_params['up_1'] == {'kernel': (4, 4, 128, 64)}
  assert g_params['up_2'] == {'kernel': (4, 4, 64, 32)}
  assert g_params['to_rgb'] == {'kernel': (3, 3, 32, 3), 'bias': (3,)}
  assert _shapes(g_vars['batch_stats'])['up_2_norm'] == {'mean': (32,),
                                                         'var': (32,)}


def test_g_channels_sets_every_generator_block():
  # 32x32: blocks at 4x4, 8x8, 16x16, then the transposed conv to RGB;
  # with the full-resolution block, one more at 32x32 with half of the
  # last block's channels (not g_width's half: g_width is not used).
  for full_block, last in ((False, 'to_rgb'), (True, 'up_2')):
    g = models.create_generator(
        _config(g_width=9, g_channels='12,10,6',
                g_full_resolution_block=full_block), 32)
    images, g_vars = jax.eval_shape(
        functools.partial(g.init_with_output, train=False),
        jax.random.key(0), _z())
    assert images.shape == (BATCH, 32, 32, 3)
    g_params = _shapes(g_vars['params'])
    assert g_params['project'] == {'kernel': (LATENT, 16 * 12)}
    assert g_params['up_0'] == {'kernel': (4, 4, 12, 10)}
    assert g_params['up_1'] == {'kernel': (4, 4, 10, 6)}
    assert g_params[last]['kernel'] == (4, 4, 6, 3)


def test_channel_cap_keeps_large_models_bounded():
  assert dcgan.generator_channels(64, 64) == [512, 256, 128, 64]
  assert dcgan.generator_channels(256, 64) == [512, 512, 512, 256, 128, 64]
  assert dcgan.discriminator_channels(256, 64) == [
      64, 128, 256, 512, 512, 512]


@pytest.mark.parametrize(
    'generator,discriminator,resolution,full_block,upsampling', [
        ('dcgan', 'dcgan', 32, False, 'transposed'),
        ('dcgan', 'dcgan', 32, True, 'transposed'),
        ('dcgan', 'dcgan', 32, False, 'nearest'),
        ('resnet', 'resnet', 64, False, 'transposed'),
        ('dcgan', 'small_cnn', 32, False, 'transposed')])
def test_fast_and_xla_models_compute_the_same_function(
    generator, discriminator, resolution, full_block, upsampling):
  """Same parameters, same outputs: checkpoints move between backends.

  The 'xla' layers are the textbook definitions (for 'nearest': upsample,
  then convolve), so this also checks what each generator computes.
  """
  kwargs = dict(generator=generator, discriminator=discriminator,
                g_width=3, d_width=3, d_norm='layer',
                g_full_resolution_block=full_block, g_upsampling=upsampling)
  fast = _config(conv_impl='fast', **kwargs)
  xla = _config(conv_impl='xla', **kwargs)

  @_jit
  def run(z):
    outputs = []
    g_vars = None
    for config in (fast, xla):
      g = models.create_generator(config, resolution)
      d = models.create_discriminator(config, resolution)
      if g_vars is None:
        g_vars = g.init(jax.random.key(0), z, train=False)
        d_vars = d.init(jax.random.key(1), _images(resolution), train=False)
      images, _ = g.apply(g_vars, z, train=True, mutable=['batch_stats'])
      critic = lambda x, d=d: d.apply(d_vars, x, train=False).sum()
      outputs.append((images, d.apply(d_vars, images, train=False),
                      jax.grad(critic)(images)))
    return outputs

  (fast_images, fast_scores, fast_grad), (xla_images, xla_scores,
                                          xla_grad) = run(_z())
  _assert_images(fast_images, resolution)
  assert fast_scores.shape == (BATCH,) and fast_scores.dtype == jnp.float32
  np.testing.assert_allclose(fast_images, xla_images, atol=1e-5)
  np.testing.assert_allclose(fast_scores, xla_scores, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(fast_grad, xla_grad, rtol=1e-4,
                             atol=1e-4 * float(jnp.max(jnp.abs(xla_grad))))


@pytest.mark.parametrize('name,resolution', [
    ('dcgan', 32), ('resnet', 64), ('small_cnn', 32)])
def test_spectral_norm_state_and_scale_invariance(name, resolution):
  discriminator = models.create_discriminator(
      _config(discriminator=name, spectral_norm=True), resolution)
  x = _images(resolution)

  @_jit
  def run(x):
    variables = discriminator.init(jax.random.key(0), x, train=False)
    trained, state = discriminator.apply(variables, x, train=True,
                                         mutable=['batch_stats'])
    # Every conv/dense kernel x10: from the same stored u, the power
    # iteration finds the same singular vectors and a 10x sigma, so the
    # scores stay the same only if every layer is normalized. train=False
    # runs without mutable=: flax would raise if it tried to store anything.
    scaled_params = jax.tree_util.tree_map_with_path(
        lambda path, p: p * 10 if path[-1].key == 'kernel' else p,
        variables['params'])
    scaled = discriminator.apply(
        {**variables, 'params': scaled_params}, x, train=False)
    return variables, state, trained, scaled

  variables, state, trained, scaled = run(x)
  assert 'batch_stats' in variables
  # train=True stores the new power-iteration vector u of every layer (not
  # necessarily sigma: LeCun-initialized kernels have sigma close to 1.0).
  old_u, new_u = [
      {path: leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
          tree['batch_stats']) if path[-1].key.endswith('/u')}
      for tree in (variables, state)]
  assert len(old_u) >= 3
  for path, u in old_u.items():
    assert bool(jnp.any(u != new_u[path])), path
  # Both modes normalize with the estimate from the stored u.
  np.testing.assert_allclose(scaled, trained, rtol=1e-4, atol=1e-7)
  assert float(jnp.max(jnp.abs(trained))) > 1e-5


def test_generator_batch_norm_state():
  generator = models.create_generator(_config(), 32)
  z = _z(batch=4)

  @_jit
  def run(z):
    variables = generator.init(jax.random.key(0), z, train=False)
    train_all, state = generator.apply(variables, z, train=True,
                                       mutable=['batch_stats'])
    train_half, _ = generator.apply(variables, z[:2], train=True,
                                    mutable=['batch_stats'])
    eval_all = generator.apply(variables, z, train=False)
    eval_half = generator.apply(variables, z[:2], train=False)
    return (variables, state, train_all, train_half, eval_all, eval_half)

  variables, state, train_all, train_half, eval_all, eval_half = run(z)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         variables['batch_stats'], state['batch_stats'])
  assert all(jax.tree.leaves(changed))  # Every running average moved.
  # train=True normalizes with the batch's statistics: the batch matters.
  assert not np.allclose(train_all[:2], train_half, atol=1e-4)
  # train=False uses the running averages: each image on its own.
  np.testing.assert_allclose(eval_all[:2], eval_half, atol=1e-6)


@pytest.mark.parametrize('g_norm,d_norm,spectral_norm,g_cols,d_cols', [
    ('batch', 'none', False, {'params', 'batch_stats'}, {'params'}),
    ('self_modulated', 'none', False, {'params', 'batch_stats'}, {'params'}),
    ('none', 'layer', False, {'params'}, {'params'}),
    ('none', 'batch', False, {'params'}, {'params', 'batch_stats'}),
    ('none', 'none', True, {'params'}, {'params', 'batch_stats'}),
])
def test_variable_collections(g_norm, d_norm, spectral_norm, g_cols, d_cols):
  config = _config(g_norm=g_norm, d_norm=d_norm, spectral_norm=spectral_norm)
  g = models.create_generator(config, 32)
  d = models.create_discriminator(config, 32)
  g_vars = jax.eval_shape(functools.partial(g.init, train=False),
                          jax.random.key(0), _z())
  d_vars = jax.eval_shape(functools.partial(d.init, train=False),
                          jax.random.key(0), _images(32))
  assert set(g_vars) == g_cols
  assert set(d_vars) == d_cols


@pytest.mark.parametrize('upsampling,kernel', [('transposed', 4),
                                               ('nearest', 3)])
def test_generator_upsampling_layers(upsampling, kernel):
  generator = models.create_generator(_config(g_upsampling=upsampling), 32)
  params = jax.eval_shape(functools.partial(generator.init, train=False),
                          jax.random.key(0), _z())['params']
  for name in ('up_0', 'up_1', 'to_rgb'):
    assert params[name]['kernel'].shape[:2] == (kernel, kernel), name
  images = generator.apply(generator.init(jax.random.key(0), _z(), train=False),
                           _z(), train=False)
  assert images.shape == (BATCH, 32, 32, 3)


def test_self_modulation_scales_and_shifts_each_sample_by_its_own_latent():
  x = jax.random.normal(jax.random.key(0), (3, 4, 4, 5))
  latent = jax.random.normal(jax.random.key(1), (3, LATENT))
  layer = normalization.SelfModulatedBatchNorm(train=False)
  variables = layer.init(jax.random.key(2), x, latent)
  # Fresh running statistics (mean 0, variance 1) and a zero modulation.
  plain = x / np.sqrt(1 + 1e-5)
  np.testing.assert_allclose(layer.apply(variables, x, latent), plain,
                             rtol=1e-5, atol=1e-6)
  params = variables['params']
  out = params['scale_shift']
  out = dict(out, kernel=jax.random.normal(jax.random.key(3),
                                           out['kernel'].shape),
             bias=jax.random.normal(jax.random.key(4), out['bias'].shape))
  variables = dict(variables, params=dict(params, scale_shift=out))
  hidden = jax.nn.relu(latent @ params['hidden']['kernel'] +
                       params['hidden']['bias'])
  scale, shift = np.split(hidden @ out['kernel'] + out['bias'], 2, axis=-1)
  expected = (plain * (1 + scale[:, None, None]) + shift[:, None, None])
  np.testing.assert_allclose(layer.apply(variables, x, latent), expected,
                             rtol=1e-4, atol=1e-5)
  # A new latent for sample 1 changes sample 1 only.
  other = layer.apply(variables, x, latent.at[1].add(1.0))
  assert not np.allclose(other[1], expected[1], atol=1e-3)
  np.testing.assert_allclose(other[::2], expected[::2], rtol=1e-4, atol=1e-5)


def test_self_modulated_generator_starts_as_its_batch_norm_twin():
  z = _z(batch=4)
  twin = {}
  for g_norm in ('batch', 'self_modulated'):
    generator = models.create_generator(_config(g_norm=g_norm), 32)
    variables = generator.init(jax.random.key(0), z, train=False)
    twin[g_norm] = (generator, variables)
  generator, variables = twin['self_modulated']
  modulated = variables['params']['up_0_norm']
  assert set(modulated) == {'hidden', 'scale_shift'}
  assert modulated['scale_shift']['kernel'].shape[-1] == 2 * 4  # 2x 4 ch.
  # Same convolutions (the unit-scale, zero-shift batch norm has none of
  # its own): the same images in training mode.
  shared = {k: v for k, v in twin['batch'][1]['params'].items()
            if not k.endswith('_norm')}
  variables = dict(variables, params={**variables['params'], **shared})
  images = {}
  for g_norm, (module, own) in twin.items():
    own = variables if g_norm == 'self_modulated' else own
    images[g_norm], _ = module.apply(own, z, train=True,
                                     mutable=['batch_stats'])
  np.testing.assert_allclose(images['self_modulated'], images['batch'],
                             rtol=1e-4, atol=1e-5)


def test_layer_norm_critic_scores_each_example_independently():
  # Needed by the per-example gradient penalty; batch norm would couple them.
  discriminator = models.create_discriminator(_config(d_norm='layer'), 32)
  x = _images(32, batch=3)

  @_jit
  def run(x):
    variables = discriminator.init(jax.random.key(0), x, train=False)
    return (discriminator.apply(variables, x, train=False),
            discriminator.apply(variables, x[:1], train=False))

  scores_all, scores_one = run(x)
  np.testing.assert_allclose(scores_all[:1], scores_one, rtol=1e-5)


def test_dcgan_minibatch_stddev_lets_a_score_see_its_group():
  plain = models.create_discriminator(_config(), 32)
  grouped = models.create_discriminator(_config(d_minibatch_stddev=2), 32)
  x = _images(32, batch=4)
  changed = x.at[1].set(-x[1])  # Sample 0's group partner only.

  @_jit
  def run(x, changed):
    results = []
    for discriminator in (plain, grouped):
      variables = discriminator.init(jax.random.key(0), x, train=False)
      results.append((discriminator.apply(variables, x, train=False),
                      discriminator.apply(variables, changed, train=False),
                      sum(a.size for a in jax.tree.leaves(variables))))
    return results

  (plain_x, plain_changed, plain_size), (x_scores, changed_scores, size) = run(
      x, changed)
  assert size == plain_size + 16  # The score's 4x4 kernel: one more input.
  np.testing.assert_array_equal(np.asarray(plain_x)[[0, 2, 3]],
                                np.asarray(plain_changed)[[0, 2, 3]])
  assert abs(float(x_scores[0] - changed_scores[0])) > 1e-6
  np.testing.assert_array_equal(x_scores[2:], changed_scores[2:])


def test_bfloat16_models_return_float32_and_keep_float32_params():
  config = _config()
  g = models.create_generator(config, 32, dtype=jnp.bfloat16)
  d = models.create_discriminator(config, 32, dtype='bfloat16')

  @_jit
  def run(z):
    g_vars = g.init(jax.random.key(0), z, train=False)
    images = g.apply(g_vars, z, train=False)
    d_vars = d.init(jax.random.key(1), images, train=False)
    return g_vars, d_vars, images, d.apply(d_vars, images, train=False)

  g_vars, d_vars, images, scores = run(_z())
  for leaf in jax.tree.leaves((g_vars, d_vars)):
    assert leaf.dtype == jnp.float32
  assert images.dtype == jnp.float32 and scores.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(scores)))


def _dot_operand_dtypes(jaxpr) -> list[str]:
  """The first operand's dtype of every dot_general, nested jaxprs included."""
  dtypes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      dtypes.append(str(eqn.invars[0].aval.dtype))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          dtypes += _dot_operand_dtypes(sub)
  return dtypes


def test_bfloat16_matmul_inputs_reach_every_convolution():
  # The generator's dense projection keeps float32; each of its three
  # transposed convolutions and the critic's four convolutions (three
  # strided, the 4x4 score) multiply bfloat16 operands.
  z, images = _z(), _images(32)
  results = {}
  for matmul_inputs in ('float32', 'bfloat16'):
    config = _config(g_width=8, d_width=8, matmul_inputs=matmul_inputs)
    g = models.create_generator(config, 32)
    d = models.create_discriminator(config, 32)
    g_vars = _jit(functools.partial(g.init, train=False))(
        jax.random.key(0), z)
    d_vars = _jit(functools.partial(d.init, train=False))(
        jax.random.key(1), images)
    g_apply = functools.partial(g.apply, train=False)
    d_apply = functools.partial(d.apply, train=False)
    results[matmul_inputs] = (
        _dot_operand_dtypes(jax.make_jaxpr(g_apply)(g_vars, z).jaxpr),
        _dot_operand_dtypes(jax.make_jaxpr(d_apply)(d_vars, images).jaxpr),
        _jit(g_apply)(g_vars, z), _jit(d_apply)(d_vars, images))
  g_dots, d_dots, *plain = results['float32']
  assert (g_dots, d_dots) == (['float32'] * 4, ['float32'] * 4)
  g_dots, d_dots, *rounded = results['bfloat16']
  assert (g_dots, d_dots) == (['float32'] + ['bfloat16'] * 3,
                              ['bfloat16'] * 4)
  for a, b in zip(plain, rounded):
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.02)
  # XLA's own convolutions (GPU, TPU) sample such a model with float32
  # operands; training it there is refused (test_config).
  xla = _config(conv_impl='xla', matmul_inputs='bfloat16')
  assert models.create_generator(xla, 32).precision is None
  assert models.create_discriminator(xla, 32).precision is None


@pytest.mark.parametrize('backend,expected', [
    ('cpu', 'fast'), ('gpu', 'xla'), ('tpu', 'xla')])
def test_conv_impl_auto_picks_fast_layers_only_on_cpu(monkeypatch, backend,
                                                      expected):
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  assert models.resolve_conv_impl('auto') == expected
  assert models.resolve_conv_impl('xla') == 'xla'
  assert models.resolve_conv_impl('fast') == 'fast'
  assert models.create_generator(_config(conv_impl='auto'),
                                 32).conv_impl == expected
  assert models.create_discriminator(_config(conv_impl='auto'),
                                     32).conv_impl == expected


def test_pack_stacks_consecutive_samples_along_the_channels():
  x = np.asarray(_images(32, batch=6))
  packed = np.asarray(packing.pack(jnp.asarray(x), 3))
  assert packed.shape == (2, 32, 32, 9)
  for i in range(2):
    for j in range(3):
      np.testing.assert_array_equal(packed[i, ..., 3 * j:3 * j + 3],
                                    x[3 * i + j])
  with pytest.raises(ValueError, match='batch size divisible by 4'):
    packing.pack(jnp.asarray(x), 4)


def test_packed_critic_scores_each_pack_from_all_its_samples():
  discriminator = models.create_discriminator(_config(d_pack=2), 32)
  x = _images(32, batch=6)
  changed = x.at[3].set(-x[3])  # The second sample of the second pack.

  @_jit
  def run(x, changed):
    variables = discriminator.init(jax.random.key(0), x[:2], train=False)
    return (discriminator.apply(variables, x, train=False),
            discriminator.apply(variables, changed, train=False),
            variables['params']['critic']['down_0']['kernel'].shape)

  scores, changed_scores, first_kernel = run(x, changed)
  assert scores.shape == (3,)
  assert first_kernel[-2] == 6  # Two RGB images per input.
  assert abs(float(scores[1] - changed_scores[1])) > 1e-6
  np.testing.assert_array_equal(np.asarray(scores)[[0, 2]],
                                np.asarray(changed_scores)[[0, 2]])
  with pytest.raises(ValueError, match='model.d_pack=1 for a conditional'):
    discriminator.apply({}, x, jnp.ones((6, 2)), train=False)


@pytest.mark.parametrize('overrides,resolution,message', [
    (dict(generator='stylegan'), 64,
     r"model.generator='stylegan'.*dcgan, resnet, stylegan2"),
    (dict(discriminator='vit'), 64,
     r"model.discriminator='vit'.*dcgan, resnet, small_cnn"),
    (dict(g_norm='layer'), 64,
     r"model.g_norm='layer'.*batch, self_modulated, none"),
    (dict(g_upsampling='bilinear'), 32,
     r"model.g_upsampling='bilinear'.*transposed, nearest"),
    (dict(generator='resnet', g_upsampling='nearest'), 64,
     r'g_upsampling is an option of the dcgan generator'),
    (dict(generator='resnet', g_norm='self_modulated'), 64,
     r"g_norm='self_modulated' is an option of the dcgan generator"),
    (dict(d_norm='group'), 64, r"model.d_norm='group'.*none, layer, batch"),
    (dict(conv_impl='cudnn'), 64, r"model.conv_impl='cudnn'.*auto, fast, xla"),
    (dict(g_width=0), 64, r'model.g_width=0 must be a positive integer'),
    (dict(d_width=-1), 64, r'model.d_width=-1'),
    (dict(latent_dim=2.5), 64, r'model.latent_dim=2.5'),
    (dict(spectral_norm='yes'), 64, r"model.spectral_norm='yes'"),
    (dict(g_full_resolution_block=1), 64,
     r'model.g_full_resolution_block=1 must be True or False'),
    (dict(generator='resnet', g_full_resolution_block=True), 64,
     r'g_full_resolution_block is an option of the dcgan generator'),
    (dict(g_channels='512,256'), 32,
     r"model.g_channels='512,256' must be 3 positive integers.*"
     r"'256,128,64'"),
    (dict(g_channels='512,256,0'), 32, r"model.g_channels='512,256,0'"),
    (dict(g_channels='512;256;128'), 32, r'must be 3 positive integers'),
    (dict(generator='resnet', g_channels='512,256,128,64'), 64,
     r'g_channels is an option of the dcgan generator'),
    ({}, 48, r'dataset.resolution=48 .*32, 64, 128, 256'),
    ({}, 512, r'dataset.resolution=512'),
    ({}, 16, r'dataset.resolution=16'),
    (dict(generator='resnet'), 32, r"model.generator='resnet' needs .*>= 64"),
    (dict(discriminator='resnet'), 32, r"model.discriminator='resnet' needs"),
    (dict(generator='stylegan2', mapping_layers=8, style_mixing_prob=0.9),
     64, r"stylegan2' demodulates.*g_norm='none'"),
    (dict(discriminator='stylegan2', spectral_norm=True), 64,
     r"discriminator='stylegan2' has no normalization"),
    (dict(generator='stylegan2', g_norm='none', mapping_layers=0,
          style_mixing_prob=0.9), 64, r'model.mapping_layers=0'),
    (dict(generator='stylegan2', g_norm='none', mapping_layers=2,
          style_mixing_prob=1.5), 64, r'model.style_mixing_prob=1.5'),
    (dict(d_minibatch_stddev=-1), 32, r'model.d_minibatch_stddev=-1 must be'),
    (dict(d_pack=0), 32, r'model.d_pack=0 must be 1 \(off\)'),
    (dict(discriminator='resnet', d_minibatch_stddev=4), 64,
     r'd_minibatch_stddev is an option of the dcgan critic'),
    (dict(matmul_inputs='float16'), 32,
     r"model.matmul_inputs='float16'.*float32, bfloat16"),
    (dict(generator='resnet', matmul_inputs='bfloat16'), 64,
     r"matmul_inputs='bfloat16' is an option of the dcgan generator and "
     r'critic'),
])
def test_validate_model_config_errors(overrides, resolution, message):
  config = _config(**overrides)
  with pytest.raises(ValueError, match=message):
    models.validate_model_config(config, resolution)
  with pytest.raises(ValueError, match=message):
    models.create_generator(config, resolution)
  with pytest.raises(ValueError, match=message):
    models.create_discriminator(config, resolution)


def test_validate_accepts_the_default_config_and_names_are_exported():
  config = default.get_config()
  models.validate_model_config(config.model, config.dataset.resolution)
  assert config.model.generator in models.GENERATORS
  assert config.model.discriminator in models.DISCRIMINATORS
  assert models.GENERATORS == ('dcgan', 'resnet', 'stylegan2')
  assert models.DISCRIMINATORS == ('dcgan', 'resnet', 'small_cnn',
                                   'stylegan2')
  with pytest.raises(ValueError, match=r'dtype.*float32, bfloat16'):
    models.create_generator(config.model, 64, dtype=jnp.int32)
