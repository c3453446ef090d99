"""Improved precision and recall (Kynkaanniemi et al. 2019).

Each set's manifold is the union of balls around its samples, each ball's
radius the distance to the sample's k-th nearest neighbour in its own set
(k = 3). Precision is the fraction of fake samples inside the real
manifold; recall the fraction of real samples inside the fake manifold.

Distances are computed in row batches on the default device (squared
Euclidean through one matmul per batch), so memory stays
O(batch_size * N) and GPUs/TPUs do the heavy part.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

DEFAULT_K = 3
DEFAULT_BATCH_SIZE = 1000


@jax.jit
def _squared_distances(rows: jax.Array, columns: jax.Array) -> jax.Array:
  """[B, D] x [N, D] -> [B, N] squared Euclidean distances (float32)."""
  dot = jnp.dot(rows, columns.T, precision=lax.Precision.HIGHEST)
  squared = (jnp.sum(rows * rows, axis=1)[:, None]
             + jnp.sum(columns * columns, axis=1)[None, :] - 2.0 * dot)
  return jnp.maximum(squared, 0.0)


@functools.partial(jax.jit, static_argnames='k')
def _kth_neighbour(rows: jax.Array, columns: jax.Array, k: int) -> jax.Array:
  # k + 1 smallest: each row's own zero distance to itself comes first.
  smallest, _ = lax.top_k(-_squared_distances(rows, columns), k + 1)
  return -smallest[:, k]


@jax.jit
def _inside_any_ball(rows: jax.Array, centres: jax.Array,
                     radii2: jax.Array) -> jax.Array:
  return jnp.any(_squared_distances(rows, centres) <= radii2[None, :], axis=1)


def _row_batches(features: np.ndarray, batch_size: int):
  """Fixed-size row batches (the last zero-padded): each jit compiles once."""
  for start in range(0, features.shape[0], batch_size):
    batch = features[start:start + batch_size]
    count = batch.shape[0]
    if count < batch_size:
      batch = np.concatenate(
          [batch, np.zeros((batch_size - count, batch.shape[1]), batch.dtype)])
    yield batch, count


def knn_radii(features: np.ndarray, k: int = DEFAULT_K,
              batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
  """Squared distance of each sample to its k-th nearest other sample.

  Args:
    features: [N, D], N > k.
    k: neighbourhood size.
    batch_size: rows per distance batch.

  Returns:
    [N] float32 squared radii.
  """
  features = np.asarray(features, np.float32)
  if features.shape[0] <= k:
    raise ValueError(f'Need more than k={k} samples, got {features.shape[0]}.')
  batch_size = min(batch_size, features.shape[0])
  columns = jnp.asarray(features)
  radii = [np.asarray(_kth_neighbour(batch, columns, k))[:count]
           for batch, count in _row_batches(features, batch_size)]
  return np.concatenate(radii)


def manifold_coverage(samples: np.ndarray, centres: np.ndarray,
                      radii2: np.ndarray,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> float:
  """Fraction of `samples` within sqrt(radii2[j]) of some centres[j]."""
  samples = np.asarray(samples, np.float32)
  batch_size = min(batch_size, samples.shape[0])
  centres, radii2 = jnp.asarray(centres, jnp.float32), jnp.asarray(radii2)
  inside = [np.asarray(_inside_any_ball(batch, centres, radii2))[:count]
            for batch, count in _row_batches(samples, batch_size)]
  return float(np.concatenate(inside).mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = DEFAULT_K,
                     batch_size: int = DEFAULT_BATCH_SIZE
                     ) -> tuple[float, float]:
  """Improved precision and recall of `fake` against `real`.

  Args:
    real: [N, D] features of real images.
    fake: [M, D] features of generated images.
    k: neighbourhood size (3 in the paper).
    batch_size: rows per distance batch.

  Returns:
    (precision, recall), each in [0, 1].
  """
  real_radii = knn_radii(real, k, batch_size)
  fake_radii = knn_radii(fake, k, batch_size)
  precision = manifold_coverage(fake, real, real_radii, batch_size)
  recall = manifold_coverage(real, fake, fake_radii, batch_size)
  return precision, recall
