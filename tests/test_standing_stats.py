"""Standing batch-norm statistics are the generator's own, exactly."""

import jax
import numpy as np
import pytest

from facegan_jax import conditioning
from facegan_jax import standing_stats
from facegan_jax import train_step
from tests.tiny import tiny_config

BATCH = 8


@pytest.fixture(scope='module')
def generator_and_variables():
  config = tiny_config()
  generator, _ = train_step.create_models(config)
  z = np.zeros((1, config.model.latent_dim), np.float32)
  variables = generator.init(jax.random.PRNGKey(0), z, train=False)
  # Scale the kernels up, so the activations' statistics are far from the
  # initial (0, 1) and a wrong estimate shows.
  params = jax.tree_util.tree_map(lambda p: p * 3.0, variables['params'])
  return generator, params, variables['batch_stats'], config.model.latent_dim


def _standing(generator_and_variables, num_batches, stats=None):
  generator, params, init_stats, latent_dim = generator_and_variables
  standing = jax.jit(standing_stats.make_standing_stats_fn(
      generator, latent_dim, BATCH, num_batches))
  return standing(params, init_stats if stats is None else stats,
                  jax.random.PRNGKey(7))


def test_one_batch_makes_inference_mode_equal_training_mode(
    generator_and_variables):
  """With the statistics of one batch, inference mode normalizes that batch
  exactly as training mode does."""
  generator, params, _, latent_dim = generator_and_variables
  stats = _standing(generator_and_variables, 1)
  (key,) = jax.random.split(jax.random.PRNGKey(7), 1)  # The batch's latents.
  z = jax.random.normal(key, (BATCH, latent_dim))
  trained, _ = generator.apply({'params': params, 'batch_stats': stats}, z,
                               train=True, mutable=['batch_stats'])
  inferred = generator.apply({'params': params, 'batch_stats': stats}, z,
                             train=False)
  assert float(np.abs(np.asarray(trained)).mean()) > 0.05
  np.testing.assert_allclose(inferred, trained, atol=2e-5)


def test_many_batches_average_the_per_batch_statistics(
    generator_and_variables):
  generator, params, init_stats, latent_dim = generator_and_variables
  stats = _standing(generator_and_variables, 3)
  per_batch = []
  for key in jax.random.split(jax.random.PRNGKey(7), 3):
    z = jax.random.normal(key, (BATCH, latent_dim))
    # Momentum 0 by hand: the running average after one update from
    # (0 mean, 1 variance) with momentum m holds (1 - m) x the statistic.
    _, updates = generator.apply({'params': params, 'batch_stats': init_stats},
                                 z, train=True, mutable=['batch_stats'])
    per_batch.append(updates['batch_stats'])
  _assert_mean_of(stats, per_batch)


def _assert_mean_of(stats, per_batch):
  """`stats` is the mean of the batch statistics behind `per_batch`, each a
  running-average update from (0 mean, 1 variance) with momentum 0.9."""
  m = 0.9
  for path, value in jax.tree_util.tree_leaves_with_path(stats):
    start = 1.0 if 'var' in jax.tree_util.keystr(path) else 0.0
    updated = [np.asarray(_at(tree, path)) for tree in per_batch]
    expected = np.mean([(u - m * start) / (1 - m) for u in updated], axis=0)
    np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5)


def _at(tree, path):
  for entry in path:
    tree = tree[entry.key]
  return tree


def test_the_result_does_not_depend_on_the_stored_statistics(
    generator_and_variables):
  _, _, init_stats, _ = generator_and_variables
  other = jax.tree_util.tree_map(lambda s: s + 5.0, init_stats)
  for a, b in zip(
      jax.tree_util.tree_leaves(_standing(generator_and_variables, 2)),
      jax.tree_util.tree_leaves(_standing(generator_and_variables, 2, other))):
    np.testing.assert_array_equal(a, b)


def test_a_conditional_generator_takes_labels_drawn_from_the_bank():
  """Each latent is joined with a row of the bank: with a bank of one label
  vector, the statistics are those of every batch joined with it."""
  config = tiny_config(**{'dataset.attributes': 'A,B'})
  generator, _ = train_step.create_models(config)
  latent_dim = config.model.latent_dim
  variables = generator.init(jax.random.PRNGKey(0),
                             np.zeros((1, latent_dim + 2), np.float32),
                             train=False)
  params = jax.tree_util.tree_map(lambda p: p * 3.0, variables['params'])
  standing = jax.jit(standing_stats.make_standing_stats_fn(
      generator, latent_dim, BATCH, 2))

  for label in ([1, 0], [0, 1]):
    bank = np.tile(np.float32(label), (5, 1))
    stats = standing(params, variables['batch_stats'], jax.random.PRNGKey(7),
                     bank)
    per_batch = []
    for key in jax.random.split(jax.random.PRNGKey(7), 2):
      z = conditioning.generator_input(
          jax.random.normal(key, (BATCH, latent_dim)),
          np.tile(np.float32(label), (BATCH, 1)))
      per_batch.append(generator.apply(
          {'params': params, 'batch_stats': variables['batch_stats']}, z,
          train=True, mutable=['batch_stats'])[1]['batch_stats'])
    _assert_mean_of(stats, per_batch)
