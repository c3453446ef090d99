"""Standing batch-norm statistics for the EMA generator (BigGAN's).

In inference mode a batch-norm generator normalizes with stored statistics.
The EMA generator's weights are an average over thousands of updates; the
statistics averaged beside them (`TrainState.ema_batch_stats`) describe the
raw generators along the way, not these weights. Standing statistics are
the EMA generator's own: the mean, over many batches of fresh latents at
the training batch size, of each layer's batch mean and variance, i.e. the
normalization its layers met in training (Brock et al. 2019, "Large Scale
GAN Training", appendix C). A conditional generator's batches take label
vectors drawn from the data's, as its fakes do in training.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from facegan_jax import conditioning
from facegan_jax import partitioning
from facegan_jax.models import normalization

PyTree = Any


def make_standing_stats_fn(generator: nn.Module, latent_dim: int,
                           batch_size: int, num_batches: int,
                           mesh: Mesh | None = None
                           ) -> Callable[..., PyTree]:
  """`standing(params, stats, key, label_bank=None) -> stats`, not jitted.

  `stats` gives the structure only: the result does not depend on its
  values, so it is the same whenever and however often it is recomputed.
  Each batch is `batch_size` latents (split over the mesh's data axis, whose
  batch norm reduces over the whole batch, as in a training step); for a
  conditional generator, `label_bank` [N, A] holds the data's label vectors
  (0/1), and each latent takes one drawn from them with replacement.
  """
  # From zero, a batch-norm layer's running-average update is
  # (1 - momentum) * the batch's statistic.
  scale = 1.0 / (1.0 - normalization.BATCH_NORM_MOMENTUM)

  def batch_statistics(params, zeros, key, label_bank):
    z = jax.random.normal(key, (batch_size, latent_dim))
    if label_bank is not None:
      rows = jax.random.randint(jax.random.fold_in(key, 1), (batch_size,), 0,
                                label_bank.shape[0])
      z = conditioning.generator_input(z, label_bank[rows])
    if mesh is not None:
      z = jax.lax.with_sharding_constraint(z,
                                           partitioning.batch_sharding(mesh))
    _, updates = generator.apply({'params': params, 'batch_stats': zeros}, z,
                                 train=True, mutable=['batch_stats'])
    return jax.tree_util.tree_map(lambda u: u * scale, updates['batch_stats'])

  def standing(params, stats, key, label_bank=None):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, stats)
    per_batch = jax.lax.map(
        lambda k: batch_statistics(params, zeros, k, label_bank),
        jax.random.split(key, num_batches))
    return jax.tree_util.tree_map(lambda s: jnp.mean(s, axis=0), per_batch)

  return standing
