"""The jitted train step: learning signal, compile-once, device-count invariance."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from facegan_jax import checkpointing
from facegan_jax import losses
from facegan_jax import partitioning
from facegan_jax import train_step as train_step_lib
from tests.tiny import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(config):
  mesh = partitioning.create_mesh()
  program = train_step_lib.build_program(config, mesh)
  return program, program.init(jax.random.PRNGKey(0)), mesh


def _batches(config, n, mesh, seed=0):
  rng = np.random.default_rng(seed)
  shape = (config.n_critic, config.batch_size, 32, 32, 3)
  return [partitioning.make_global_batch(
      rng.uniform(-1, 1, shape).astype(np.float32), mesh, 1) for _ in range(n)]


@pytest.fixture(scope='module')
def three_steps():
  config = tiny_config()
  config.ema_warmup = 3.0  # Not the default 10, so that the key is seen.
  program, state, mesh = _build(config)
  initial = jax.device_get(state)
  history = []
  for images in _batches(config, 3, mesh):
    state, metrics = program.step(state, images)
    history.append(jax.device_get(metrics))
  return config, initial, jax.device_get(state), history, program


def test_compiles_once(three_steps):
  *_, program = three_steps
  assert program.step._cache_size() == 1  # pylint: disable=protected-access


def test_state_advances(three_steps):
  config, initial, final, history, _ = three_steps
  assert int(final.step) == 3
  for name in ('g_params', 'd_params'):
    before = jax.tree_util.tree_leaves(getattr(initial, name))
    after = jax.tree_util.tree_leaves(getattr(final, name))
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), name
  # The EMA generator trails the raw one.
  g0 = jax.tree_util.tree_leaves(initial.g_params)
  g3 = jax.tree_util.tree_leaves(final.g_params)
  e3 = jax.tree_util.tree_leaves(final.ema_params)
  raw_move = sum(float(np.abs(a - b).sum()) for a, b in zip(g3, g0))
  ema_move = sum(float(np.abs(a - b).sum()) for a, b in zip(e3, g0))
  assert 0 < ema_move < raw_move


def test_ema_averages_the_generator_weights_and_its_batch_statistics(
    three_steps):
  config, initial, _, _, program = three_steps
  mesh = partitioning.create_mesh()
  state = initial
  for t, images in enumerate(_batches(config, 2, mesh, seed=1)):
    new, _ = _one_step(program, state, images)
    # The documented warm-up: decay min(ema_decay, (1 + t) / (K + t)).
    decay = min(config.ema_decay, (1 + t) / (config.ema_warmup + t))
    for average, previous, raw in (
        (new.ema_params, state.ema_params, new.g_params),
        (new.ema_batch_stats, state.ema_batch_stats,
         new.batch_stats['generator'])):
      leaves = jax.tree_util.tree_leaves
      assert leaves(raw), 'the tiny generator has batch norm'
      for a, p, r in zip(leaves(average), leaves(previous), leaves(raw)):
        np.testing.assert_allclose(a, decay * p + (1 - decay) * r,
                                   rtol=1e-5, atol=1e-7)
    state = new


def test_metrics_are_finite_and_consistent(three_steps):
  _, _, _, history, _ = three_steps
  expected = {'d_loss', 'g_loss', 'wasserstein', 'penalty', 'd_real', 'd_fake',
              'g_grad_norm', 'd_grad_norm', 'g_lr', 'd_lr'}
  for metrics in history:
    assert expected <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics['penalty'] > 0
    np.testing.assert_allclose(metrics['g_lr'], 1e-4, rtol=1e-6)


def _one_step(program, host_state, images):
  """One step from a host copy of a state (the step donates its input)."""
  state = jax.device_put(host_state, program.state_sharding)
  state, metrics = program.step(state, images)
  return jax.device_get(state), jax.device_get(metrics)


@pytest.fixture(scope='module')
def fast_and_xla():
  """One WGAN-GP step per conv_impl, from the same state on the same batch.

  Returns (initial host state, images, {impl: (program, (state, metrics))}).
  Parameters have the same layout under both implementations, so the state
  initialized by the 'fast' program is the 'xla' program's input as well.
  """
  results, host_state, images = {}, None, None
  # GPUs would compute XLA's convolutions in TF32; compare float32 math.
  with jax.default_matmul_precision('highest'):
    for impl in ('fast', 'xla'):
      config = tiny_config(**{'model.conv_impl': impl, 'n_critic': 1})
      program, state, mesh = _build(config)
      if host_state is None:
        host_state = jax.device_get(state)
        images = _batches(config, 1, mesh, seed=1)[0]
      results[impl] = program, _one_step(program, host_state, images)
  return host_state, images, results


def test_wasserstein_is_the_critic_gap_on_real_and_generated_images(
    fast_and_xla):
  host_state, images, results = fast_and_xla
  program = results['fast'][0]
  # A zero last layer makes the generator draw all-zero images (tanh(0)).
  g_params = dict(host_state.g_params)
  g_params['to_rgb'] = jax.tree_util.tree_map(np.zeros_like,
                                              g_params['to_rgb'])
  with jax.default_matmul_precision('highest'):
    _, metrics = _one_step(program, host_state.replace(g_params=g_params),
                           images)
    # The critic the step updates, applied here to both batches.
    critic = lambda x: program.discriminator.apply(
        {'params': host_state.d_params}, x, train=False)
    real = np.asarray(images)[0]
    d_real = float(jnp.mean(critic(real)))
    d_fake = float(jnp.mean(critic(np.zeros_like(real))))
  # Not vacuous: the critic tells the two batches apart (by far more than
  # the tolerances below; it starts with scores near 0).
  assert not np.isclose(d_real, d_fake, rtol=1e-2, atol=0), (d_real, d_fake)
  np.testing.assert_allclose(metrics['d_real'], d_real, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(metrics['d_fake'], d_fake, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(metrics['wasserstein'], d_real - d_fake,
                             rtol=1e-4, atol=1e-9)


def test_xla_convolutions_train_like_the_fast_layers(fast_and_xla):
  """conv_impl='xla' (every GPU/TPU run) == 'fast' (CPU), penalty included."""
  _, _, results = fast_and_xla
  _, (fast_state, fast_metrics) = results['fast']
  _, (xla_state, xla_metrics) = results['xla']
  assert fast_metrics['penalty'] > 0  # The second-order gradient is in it.
  assert fast_metrics.keys() == xla_metrics.keys()
  for name, value in fast_metrics.items():
    np.testing.assert_allclose(xla_metrics[name], value, rtol=1e-4, atol=1e-9,
                               err_msg=name)
  # Parameters, Adam's moments (with b1=0 its mu is the last gradient), EMA
  # and batch-norm statistics after one update of each player.
  fast_leaves = jax.tree_util.tree_leaves_with_path(fast_state)
  xla_leaves = jax.tree_util.tree_leaves(xla_state)
  assert len(fast_leaves) == len(xla_leaves)
  for (path, fast), xla in zip(fast_leaves, xla_leaves):
    name = jax.tree_util.keystr(path)
    scale = float(np.max(np.abs(fast))) if np.size(fast) else 0.0
    np.testing.assert_allclose(xla, fast, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=name)


@pytest.mark.parametrize('loss,penalty,diffaugment', [
    ('non_saturating', 'dragan', ''),
    ('hinge', 'none', 'color,translation,cutout'),
    ('least_squares', 'r1', ''),
    ('relativistic', 'r1_r2', ''),
    ('minimax', 'none', '')])
def test_every_loss_and_penalty_trains(loss, penalty, diffaugment):
  config = tiny_config(**{'loss.name': loss, 'loss.penalty': penalty,
                          'n_critic': 1, 'model.spectral_norm': loss == 'hinge',
                          'dataset.diffaugment': diffaugment})
  program, state, mesh = _build(config)
  for images in _batches(config, 2, mesh):
    state, metrics = program.step(state, images)
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert (metrics['penalty'] > 0) == (penalty != 'none')


def test_lazy_penalty_runs_every_k_updates_with_k_times_the_weight():
  config = tiny_config(**{'loss.name': 'non_saturating', 'loss.penalty': 'r1'})
  lazy_config = tiny_config(**{'loss.name': 'non_saturating',
                               'loss.penalty': 'r1', 'loss.r1_every': 4})
  program, state, _ = _build(config)
  real = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)),
                     jnp.float32)
  fake = -real
  def penalty(config, update_index):
    update = train_step_lib.GanUpdate(
        program.generator, program.discriminator, *[None] * 4, config)
    _, (_, aux) = update.critic_loss(
        state.d_params, state.batch_stats, real, fake,
        jax.random.PRNGKey(0), update_index)
    return float(aux['penalty'])
  every_time = penalty(config, 3)
  assert every_time > 0
  np.testing.assert_allclose(penalty(lazy_config, 8), 4 * every_time,
                             rtol=1e-5)
  assert penalty(lazy_config, 9) == 0 and penalty(lazy_config, 3) == 0


def test_top_k_generator_update_learns_from_the_most_real_looking_fakes():
  config = tiny_config(**{'loss.name': 'non_saturating', 'loss.penalty': 'none',
                          'n_critic': 1, 'loss.top_k': 0.5,
                          'loss.top_k_half_life': 1})
  program, state, mesh = _build(config)
  update = train_step_lib._gan_update(  # pylint: disable=protected-access
      config, program.generator, program.discriminator,
      *train_step_lib.create_optimizers(config))
  fake = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)),
                     jnp.float32)
  scores, _ = update.critic(state.d_params, state.batch_stats['discriminator'],
                            fake, True)
  per_fake = losses.generator_losses('non_saturating', scores)
  best = np.argsort(-np.asarray(scores))[:4]
  def loss_at(step):
    at_step = state.replace(step=jnp.asarray(step, state.step.dtype))
    return lambda x: update.generator_loss(at_step, x, None, None,
                                           jax.random.PRNGKey(0))
  # Step 0: the whole batch; from step 1 (one half-life) on, the best half.
  np.testing.assert_allclose(loss_at(0)(fake), per_fake.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss_at(3)(fake), per_fake[best].mean(),
                             rtol=1e-5)
  grads = np.abs(np.asarray(jax.grad(loss_at(3))(fake))).sum(axis=(1, 2, 3))
  assert np.all(grads[best] > 0)
  assert np.all(np.delete(grads, best) == 0)
  # The jitted step trains with it.
  for images in _batches(config, 2, mesh):
    state, metrics = program.step(state, images)
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())


def test_lecam_regularization_trains_the_critic_and_keeps_its_averages(
    tmp_path):
  settings = {'loss.name': 'non_saturating', 'loss.penalty': 'none',
              'n_critic': 1, 'optimizer.d_learning_rate': 1e-2}
  config = tiny_config(**settings, **{'loss.lecam_weight': 1.0,
                                      'loss.lecam_decay': 0.5})
  program, state, mesh = _build(config)
  plain_program, plain_state, _ = _build(tiny_config(**settings))
  assert 'critic_scores' not in plain_state.batch_stats
  batches = _batches(config, 2, mesh)
  means = []
  for images in batches:
    state, metrics = program.step(state, images)
    metrics = jax.device_get(metrics)
    means.append((metrics['d_real'], metrics['d_fake']))
    assert metrics['lecam'] > 0
  for images in batches:
    plain_state, plain_metrics = plain_program.step(plain_state, images)
  assert 'lecam' not in plain_metrics
  # Moving averages (decay 0.5) of the critic's mean scores, one per update.
  averages = jax.device_get(state.batch_stats['critic_scores'])
  for side, index in (('real', 0), ('fake', 1)):
    np.testing.assert_allclose(
        averages[side], 0.25 * means[0][index] + 0.5 * means[1][index],
        rtol=1e-4)
  # The penalty is in the critic's gradient: from the same start, on the
  # same batches, the critic ends elsewhere.
  regularized = jax.tree_util.tree_leaves(jax.device_get(state.d_params))
  plain = jax.tree_util.tree_leaves(jax.device_get(plain_state.d_params))
  assert any(not np.allclose(a, b) for a, b in zip(regularized, plain))
  # The averages are saved with the state and restored exactly.
  with checkpointing.Checkpointer(tmp_path) as checkpointer:
    checkpointer.save(state, {'step': 2}, force=True)
  with checkpointing.Checkpointer(tmp_path, read_only=True) as checkpointer:
    restored, _ = checkpointer.restore(
        lambda meta: checkpointing.abstract_with_shardings(
            program.abstract_state, program.state_sharding))
  np.testing.assert_array_equal(
      jax.device_get(restored.batch_stats['critic_scores']['real']),
      averages['real'])


def test_consistency_regularization_compares_augmented_scores():
  settings = {'loss.name': 'non_saturating', 'loss.penalty': 'none',
              'n_critic': 1, 'loss.consistency_augment': 'flip'}
  program, state, mesh = _build(tiny_config(**settings))
  rng = np.random.default_rng(0)
  asymmetric = jnp.asarray(rng.uniform(-1, 1, (8, 32, 32, 3)), jnp.float32)
  symmetric = (asymmetric + asymmetric[:, :, ::-1]) / 2  # Mirror images.

  def critic_loss(real, fake, **overrides):
    config = tiny_config(**settings, **overrides)
    update = train_step_lib.GanUpdate(
        program.generator, program.discriminator, *[None] * 4, config)
    # Key 1 mirrors 5 of the 8 reals and 5 of the 8 fakes (key 0: no fake).
    loss, (_, aux) = update.critic_loss(
        state.d_params, state.batch_stats, real, fake,
        jax.random.PRNGKey(1), 0)
    return float(loss), aux

  plain_loss, plain_aux = critic_loss(asymmetric, asymmetric)
  assert 'consistency' not in plain_aux
  on = {'loss.consistency_weight': 10.0}
  # Mirrored faces score as they are: nothing to penalize.
  assert critic_loss(symmetric, symmetric, **on)[1]['consistency'] == 0
  # Asymmetric ones: a penalty, weighted into the loss.
  loss, aux = critic_loss(asymmetric, asymmetric, **on)
  assert aux['consistency'] > 0
  np.testing.assert_allclose(loss, plain_loss + 10 * aux['consistency'],
                             rtol=1e-5)
  # Fakes count only with loss.consistency_fakes (bCR).
  assert critic_loss(symmetric, asymmetric, **on)[1]['consistency'] > 0
  assert critic_loss(symmetric, asymmetric, **on,
                     **{'loss.consistency_fakes': False}
                     )[1]['consistency'] == 0
  # The jitted step trains with it.
  config = tiny_config(**settings, **on)
  program, state, mesh = _build(config)
  for images in _batches(config, 2, mesh):
    state, metrics = program.step(state, images)
  metrics = jax.device_get(metrics)
  assert metrics['consistency'] > 0
  assert all(np.isfinite(v) for v in metrics.values())


def test_packed_critic_trains_on_packs():
  config = tiny_config(**{'loss.name': 'non_saturating', 'loss.penalty': 'r1',
                          'n_critic': 1, 'model.d_pack': 2})
  program, state, mesh = _build(config)
  first_kernel = state.d_params['critic']['down_0']['kernel']
  assert first_kernel.shape[-2] == 6  # Pairs of RGB images.
  update = train_step_lib._gan_update(  # pylint: disable=protected-access
      config, program.generator, program.discriminator,
      *train_step_lib.create_optimizers(config))
  real = jnp.zeros((config.batch_size, 32, 32, 3))
  scores, _ = update.critic(state.d_params, state.batch_stats['discriminator'],
                            real, False)
  assert scores.shape == (config.batch_size // 2,)
  before = np.asarray(first_kernel)
  for images in _batches(config, 2, mesh):
    state, metrics = program.step(state, images)
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert metrics['penalty'] > 0
  assert not np.allclose(before, state.d_params['critic']['down_0']['kernel'])


def test_self_modulated_generator_learns_its_modulation():
  config = tiny_config(**{'loss.name': 'non_saturating', 'loss.penalty': 'none',
                          'n_critic': 1, 'model.g_norm': 'self_modulated',
                          'ema_standing_stats': 2})
  program, state, mesh = _build(config)
  modulation = lambda s: jax.device_get(s.g_params['up_0_norm'])
  before = modulation(state)
  assert not np.any(before['scale_shift']['kernel'])  # Starts as batch norm.
  for images in _batches(config, 2, mesh):
    state, metrics = program.step(state, images)
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())
  after = modulation(state)
  assert np.any(after['scale_shift']['kernel'])
  # Zero output weights pass no gradient to the hidden layer on the first
  # update; by the second they do.
  assert not np.allclose(after['hidden']['kernel'], before['hidden']['kernel'])
  standing = program.standing_stats(state.ema_params, state.ema_batch_stats,
                                    jax.random.PRNGKey(0))
  assert jax.tree_util.tree_structure(standing) == (
      jax.tree_util.tree_structure(state.ema_batch_stats))
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(standing))


def _worker(tmp_path, num_devices):
  out = tmp_path / f'params_{num_devices}.npz'
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={num_devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  subprocess.run([sys.executable, os.path.join('tests', 'train_step_worker.py'),
                  str(out)], cwd=REPO, env=env, check=True, timeout=300)
  return dict(np.load(out))


def test_one_and_four_devices_agree(tmp_path):
  one = _worker(tmp_path, 1)
  four = _worker(tmp_path, 4)
  assert int(one.pop('num_devices')) == 1 and int(four.pop('num_devices')) == 4
  assert one.keys() == four.keys()
  for key in one:
    np.testing.assert_allclose(four[key], one[key], rtol=2e-4, atol=2e-5,
                               err_msg=key)


def test_bfloat16_computes_in_bf16_and_keeps_float32_state():
  config = tiny_config(dtype='bfloat16', n_critic=1)
  program, state, mesh = _build(config)
  images = _batches(config, 1, mesh)[0]
  hlo = program.step.lower(state, images).as_text()
  assert 'bf16' in hlo  # the models really compute in bfloat16
  state, metrics = program.step(state, images)
  for leaf in jax.tree_util.tree_leaves((state.g_params, state.d_params,
                                         state.g_opt_state, state.d_opt_state,
                                         state.ema_params)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  metrics = jax.device_get(metrics)
  assert all(v.dtype == np.float32 and np.isfinite(v) for v in metrics.values())


def _shared_fakes_config(share_fakes):
  # A generator four times the critic's width, as in celeba32_cpu.py.
  return tiny_config(**{'loss.name': 'non_saturating', 'loss.penalty': 'none',
                        'n_critic': 1, 'model.g_width': 32,
                        'share_fakes': share_fakes})


@pytest.fixture(scope='module')
def shared_and_alternating():
  """One step of each kind from the same state on the same batch: {share_fakes:
  (config, program, initial host state, images, (state, metrics))}."""
  results, host_state, images = {}, None, None
  for share in (True, False):
    config = _shared_fakes_config(share)
    program, state, mesh = _build(config)
    if host_state is None:
      host_state = jax.device_get(state)
      images = _batches(config, 1, mesh, seed=2)[0]
    results[share] = (config, program, host_state, images,
                      _one_step(program, host_state, images))
  return results


def test_shared_fakes_step_updates_the_generator_on_the_critics_fakes(
    shared_and_alternating):
  config, program, host_state, images, (state, metrics) = (
      shared_and_alternating[True])
  alternating = shared_and_alternating[False][-1][0]
  # The critic's update is the alternating step's.
  for shared, alone in zip(jax.tree_util.tree_leaves(state.d_params),
                           jax.tree_util.tree_leaves(alternating.d_params)):
    np.testing.assert_allclose(shared, alone, rtol=1e-5, atol=1e-6)
  # The generator's: its loss under the updated critic, on the latents the
  # critic's update drew, differentiated the plain way.
  update = train_step_lib._gan_update(  # pylint: disable=protected-access
      config, program.generator, program.discriminator,
      *train_step_lib.create_optimizers(config))
  start = jax.device_put(host_state)
  critic_rng, _, g_aug_rng = train_step_lib._step_rngs(start)  # pylint: disable=protected-access
  z, noise_rng = update.critic_latents(jax.random.split(critic_rng, 1)[0],
                                       config.batch_size)
  after_critic, _ = update.critic_phase(start, images)
  def loss(g_params):
    fake, _ = update.generate(g_params, start.batch_stats['generator'], z,
                              noise_rng)
    return update.generator_loss(after_critic, fake, None, None, g_aug_rng)
  grads = jax.grad(loss)(start.g_params)
  expected, _ = update.apply_generator_update(
      after_critic, grads, state.batch_stats['generator'], {})
  np.testing.assert_allclose(metrics['g_loss'], loss(start.g_params),
                             rtol=1e-5)
  np.testing.assert_allclose(metrics['g_grad_norm'], optax.tree.norm(grads),
                             rtol=1e-4)
  # Adam's moments hold the gradient itself (its first step's update is
  # mostly its sign).
  def moments(state):
    return jax.tree_util.tree_leaves(state.g_opt_state)
  for shared, plain in zip(moments(state), moments(expected)):
    scale = float(np.max(np.abs(plain))) if np.size(plain) else 0.0
    np.testing.assert_allclose(shared, plain, rtol=1e-4, atol=1e-5 * scale)
  # Fresh latents would have given another gradient.
  assert not all(np.allclose(a, b, rtol=1e-2) for a, b in zip(
      moments(state), moments(alternating)))


def test_shared_fakes_step_runs_the_generator_forward_once(
    shared_and_alternating):
  def flops(share):
    _, program, host_state, images, _ = shared_and_alternating[share]
    state = jax.device_put(host_state, program.state_sharding)
    return program.step.lower(state, images).compile().cost_analysis()['flops']
  config, program, host_state, _, _ = shared_and_alternating[True]
  z = jnp.zeros((config.batch_size, config.model.latent_dim))
  forward = jax.jit(lambda v: program.generator.apply(
      v, z, train=True, mutable=['batch_stats'])).lower(
          {'params': host_state.g_params,
           'batch_stats': host_state.batch_stats['generator']}
      ).compile().cost_analysis()['flops']
  saved = flops(False) - flops(True)
  np.testing.assert_allclose(saved, forward, rtol=0.2)
