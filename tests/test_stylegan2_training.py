"""configs/stylegan2.py end to end: trains, resumes exactly, samples.

The module tests (shapes, modulation, mixing, w average, R1's HLO) are in
test_stylegan2.py; here the recipe runs through the real loop at 32x32 with
8-channel models, lazy R1 every 2 critic updates and lazy path length
regularization every 2 generator updates, so that 2 steps see both kinds of
update (DiffAugment off: it only adds compile time here).
"""

import jax
import numpy as np
import pytest

from configs import stylegan2
from facegan_jax import losses
from facegan_jax import partitioning
from facegan_jax import train
from facegan_jax import train_step as train_step_lib


def _config(**overrides):
  config = stylegan2.get_config('res=32')
  config.update_from_flattened_dict({
      'model.g_width': 8, 'model.d_width': 8, 'model.latent_dim': 16,
      'model.mapping_layers': 2, 'batch_size': 8, 'loss.r1_every': 2,
      'num_train_steps': 2, 'log_every': 1, 'sample_every': 2,
      'checkpoint_every': 1, 'num_samples': 4, 'dataset.num_images': 64,
      'dataset.shuffle_buffer': 64, 'dataset.diffaugment': '',
      'loss.path_length_weight': 2.0, 'loss.path_length_every': 2,
      **overrides})
  return config


def _leaves(state):
  return jax.tree_util.tree_leaves_with_path(jax.device_get(state))


@pytest.fixture(scope='module')
def two_steps(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('stylegan2')
  return workdir, train.train_and_evaluate(_config(), str(workdir))


def test_the_recipe_trains_its_new_state(two_steps):
  workdir, state = two_steps
  assert int(state.step) == 2
  state = jax.device_get(state)
  # The tracked average of w moved off its zero init; the noise strengths
  # (initialized at 0) learned something.
  assert np.abs(state.batch_stats['generator']['w_avg']).max() > 0
  strengths = [leaf for path, leaf in _leaves(state.g_params)
               if 'noise_strength' in jax.tree_util.keystr(path)]
  assert strengths and any(np.abs(s).max() > 0 for s in strengths)
  # Path length regularization ran (step 0) and set its target.
  assert state.batch_stats['generator']['path_length_mean'] > 0
  assert (workdir / 'samples' / 'ema_0000002.png').exists()


def test_path_length_regularization_is_lazy_and_weighted(two_steps):
  _, state = two_steps
  config = _config()
  generator, discriminator = train_step_lib.create_models(config)
  update = train_step_lib.GanUpdate(generator, discriminator, None, None, None,
                                    None, config)
  params, stats = state.g_params, state.batch_stats['generator']
  z = jax.random.normal(jax.random.PRNGKey(0), (8, 16))
  rng = jax.random.PRNGKey(1)
  lazy = jax.jit(update.lazy_path_length)
  on, on_stats = lazy(params, stats, z, rng, 4)
  off, off_stats = lazy(params, stats, z, rng, 5)
  # The same penalty by hand: half the batch, styles mixed as in training.
  mixing_rng, noise_rng, projection_rng = jax.random.split(rng, 3)
  variables = {'params': params, 'batch_stats': stats}
  ws, _ = generator.apply(variables, z[:4], train=True, method='map_to_ws',
                          mutable=['batch_stats'],
                          rngs={'style_mix': mixing_rng})
  penalty, mean = losses.path_length_penalty(
      lambda w: generator.apply(variables, w, method='synthesize',
                                rngs={'noise': noise_rng}),
      ws, projection_rng, stats['path_length_mean'])
  assert float(on) == pytest.approx(2.0 * 2 * float(penalty), rel=1e-4)
  assert float(on) > 0
  assert float(on_stats['path_length_mean']) == pytest.approx(float(mean))
  assert float(off) == 0
  for key in ('w_avg', 'path_length_mean'):
    np.testing.assert_array_equal(off_stats[key], stats[key])


def test_r1_gamma_follows_the_resolution():
  assert stylegan2.get_config('res=64').loss.penalty_weight == pytest.approx(
      0.0002 * 64 ** 2 / 32)
  assert stylegan2.get_config('res=32,quick').model.mapping_layers == 2


def test_resume_is_an_exact_continuation(two_steps, tmp_path):
  _, straight = two_steps
  train.train_and_evaluate(_config(num_train_steps=1), str(tmp_path))
  resumed = train.train_and_evaluate(_config(), str(tmp_path))
  for (path, a), (_, b) in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_truncation_acts_on_w(two_steps):
  _, state = two_steps
  program = train_step_lib.build_program(_config(), partitioning.create_mesh())
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
  params, stats = state.generator_variables(True)
  variables = {'params': params, 'batch_stats': stats}
  images = np.asarray(program.sample(params, stats, z, 0.5))
  in_w = program.generator.apply(variables, z, train=False,
                                 truncation_psi=0.5)
  in_z = program.generator.apply(variables, 0.5 * z, train=False)
  np.testing.assert_allclose(images, in_w, atol=1e-5)
  assert not np.allclose(images, in_z, atol=1e-3)
  # psi = 0: every latent becomes the average w, so one image for all.
  average = np.asarray(program.sample(params, stats, z, 0.0))
  np.testing.assert_allclose(average, np.broadcast_to(average[:1], (4,) +
                                                      average.shape[1:]),
                             atol=1e-6)
