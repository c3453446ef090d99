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


def test_critic_schedule_follows_generator_steps():
  # With 5 critic updates per generator step, the critic's 10th update
  # happens during generator step 2.
  schedule = optimizers.create_schedule(
      _opt_config(schedule='step', step_every=2, step_gamma=0.1), 1.0, 10)
  tx = optimizers.create_optimizer(_opt_config(schedule='step', name='rmsprop'),
                                   schedule, updates_per_step=5)
  params = {'w': jnp.ones(())}
  state = tx.init(params)
  lrs = []
  for _ in range(11):
    updates, state = tx.update({'w': jnp.ones(())}, state, params)
    lrs.append(abs(float(updates['w'])))
  # RMSProp's first update magnitudes change with the schedule at update 10.
  assert lrs[10] < lrs[9] / 5


def test_adam_and_clipping():
  tx = optimizers.create_optimizer(_opt_config(grad_clip_norm=1.0),
                                   optax.constant_schedule(0.1))
  params = {'w': jnp.zeros(3)}
  state = tx.init(params)
  updates, _ = tx.update({'w': jnp.array([300.0, 400.0, 0.0])}, state, params)
  # Adam's first step has magnitude lr per coordinate where the gradient is nonzero.
  np.testing.assert_allclose(np.abs(updates['w']), [0.1, 0.1, 0.0], rtol=1e-3)


def test_unknown_names():
  with pytest.raises(ValueError, match='adam'):
    optimizers.create_optimizer(_opt_config(name='sgd'),
                                optax.constant_schedule(1.0))
  with pytest.raises(ValueError, match='cosine'):
    optimizers.create_schedule(_opt_config(schedule='linear'), 1.0, 10)
