"""Learning-rate schedules and optimizer construction."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from facegan_jax import optimizers


def _opt_config(**overrides):
  config = default.get_config().optimizer
  config.update(overrides)
  return config


def test_constant_schedule():
  schedule = optimizers.create_schedule(_opt_config(), 3e-4, 100)
  assert float(schedule(0)) == pytest.approx(3e-4)
  assert float(schedule(99)) == pytest.approx(3e-4)


def test_step_schedule_multiplies_by_gamma_every_n_steps():
  schedule = optimizers.create_schedule(
      _opt_config(schedule='step', step_every=10, step_gamma=0.5), 1.0, 100)
  assert [float(schedule(s)) for s in (0, 9, 10, 19, 20, 35)] == pytest.approx(
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.125])


def test_cosine_with_warmup():
  schedule = optimizers.create_schedule(
      _opt_config(schedule='cosine', warmup_steps=10), 1.0, 110)
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.5, abs=1e-6)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


def _learning_rates(tx, num_updates):
  """The learning rate of each update, read off Adam's updates.

  Adam (b1=0, tiny eps) fed the same gradient at every update moves each
  parameter by exactly -lr, so the update is minus the learning rate.
  """
  params = {'w': jnp.zeros(())}
  state = tx.init(params)
  rates = []
  for _ in range(num_updates):
    updates, state = tx.update({'w': jnp.ones(())}, state, params)
    rates.append(-float(updates['w']))
  return rates


def test_critic_schedule_follows_generator_steps():
  # Step schedule: x0.1 every 2 generator steps. With 5 critic updates per
  # generator step, critic updates 0-9 are steps 0-1, 10-19 steps 2-3, ...
  schedule = optimizers.create_schedule(
      _opt_config(schedule='step', step_every=2, step_gamma=0.1), 1.0, 10)
  critic_tx = optimizers.create_optimizer(_opt_config(), schedule,
                                          updates_per_step=5)
  assert _learning_rates(critic_tx, 21) == pytest.approx(
      [1.0] * 10 + [0.1] * 10 + [0.01], rel=1e-5)
  # The generator (one update per step) follows the schedule itself.
  generator_tx = optimizers.create_optimizer(_opt_config(), schedule)
  assert _learning_rates(generator_tx, 5) == pytest.approx(
      [1.0, 1.0, 0.1, 0.1, 0.01], rel=1e-5)


def test_clipping_scales_the_gradient_to_the_global_norm():
  # eps = 1 makes Adam's first step lr * g / (|g| + 1): it depends on the
  # gradient's size, so clipping shows. |(300, 400, 0)| = 500 is clipped to
  # norm 1: g = (0.6, 0.8, 0).
  config = _opt_config(grad_clip_norm=1.0, eps=1.0)
  tx = optimizers.create_optimizer(config, optax.constant_schedule(0.1))
  params = {'w': jnp.zeros(3)}
  updates, _ = tx.update({'w': jnp.array([300.0, 400.0, 0.0])},
                         tx.init(params), params)
  np.testing.assert_allclose(
      updates['w'], [-0.1 * 0.6 / 1.6, -0.1 * 0.8 / 1.8, 0.0], rtol=1e-5)
  # A gradient already inside the norm passes unchanged.
  small, _ = tx.update({'w': jnp.array([0.3, 0.4, 0.0])}, tx.init(params),
                       params)
  np.testing.assert_allclose(
      small['w'], [-0.1 * 0.3 / 1.3, -0.1 * 0.4 / 1.4, 0.0], rtol=1e-5)


def test_unknown_names():
  with pytest.raises(ValueError, match='adam'):
    optimizers.create_optimizer(_opt_config(name='sgd'),
                                optax.constant_schedule(1.0))
  with pytest.raises(ValueError, match='cosine'):
    optimizers.create_schedule(_opt_config(schedule='linear'), 1.0, 10)


def test_lookahead_keeps_slow_weights_that_only_sync_moves():
  tx = optimizers.create_optimizer(
      _opt_config(b1=0.5, lookahead_every=3),
      optax.constant_schedule(0.1))
  params = {'w': jnp.array([1.0, -2.0])}
  state = tx.init(params)
  for grad in ([1.0, 1.0], [0.5, -1.0]):  # Updates leave the slow weights.
    updates, state = tx.update({'w': jnp.array(grad)}, state, params)
    params = optax.apply_updates(params, updates)
    slow = optax.tree_utils.tree_get(state, 'lookahead_slow')
    np.testing.assert_array_equal(slow['w'], [1.0, -2.0])
  moments = optax.tree_utils.tree_get(state, 'mu')
  fast, state = optimizers.lookahead_sync(params, state, alpha=0.25)
  expected = np.array([1.0, -2.0]) + 0.25 * (params['w'] - np.array([1.0,
                                                                     -2.0]))
  np.testing.assert_allclose(fast['w'], expected, rtol=1e-6)
  np.testing.assert_allclose(
      optax.tree_utils.tree_get(state, 'lookahead_slow')['w'], expected,
      rtol=1e-6)
  # Adam's moments go on from where the fast weights were.
  np.testing.assert_array_equal(optax.tree_utils.tree_get(state, 'mu')['w'],
                                moments['w'])


def test_without_lookahead_the_optimizer_state_is_unchanged():
  # Checkpoints of runs without Lookahead keep their structure.
  params = {'w': jnp.zeros(2)}
  plain = optimizers.create_optimizer(_opt_config(),
                                      optax.constant_schedule(0.1))
  assert optax.tree_utils.tree_get(plain.init(params),
                                   'lookahead_slow') is None
