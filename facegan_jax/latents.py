"""Latent vectors: the numbered stream, truncation and latent walks.

Latent i of seed s is normal(fold_in(PRNGKey(s), i)): the same vector
whatever batch it is drawn in, so a grid, a folder of samples, the keyframes
of a walk and the evaluation samples of one seed all agree image for image.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from facegan_jax import partitioning


@functools.lru_cache(maxsize=None)
def stream_fn(mesh: Mesh, batch_size: int, latent_dim: int):
  """Jitted (key, start) -> z [batch_size, latent_dim], replicated on mesh.

  Row r is latent number start + r of the key's stream.
  """
  def latents(key, start):
    indices = start + jnp.arange(batch_size)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i),
                                                (latent_dim,)))(indices)
  # Replicated global arrays: valid jit inputs on every process of a pod.
  return jax.jit(latents, out_shardings=partitioning.replicated(mesh))


def latent_vectors(mesh: Mesh, seed: int, count: int, latent_dim: int,
                   batch_size: int = 64) -> np.ndarray:
  """Latents 0..count-1 of `seed`'s stream on the host: float32 [count, d]."""
  batch_size = min(batch_size, count)
  draw = stream_fn(mesh, batch_size, latent_dim)
  key = jax.random.PRNGKey(seed)
  batches = [np.asarray(draw(key, start))
             for start in range(0, count, batch_size)]
  return np.concatenate(batches)[:count]


def check_truncation(psi: float) -> None:
  """ValueError unless 0 < psi <= 1."""
  if not 0 < psi <= 1:
    raise ValueError(f'truncation={psi} is out of range; use 0 < psi <= 1 '
                     '(1 = no truncation, 0.7 is a common choice).')


def truncate(z, psi):
  """Pulls Gaussian latents towards their mean (0): z -> psi * z.

  The truncation trick of StyleGAN, applied to the generator's input (the
  StyleGAN2 generator applies it to w instead); psi < 1 trades variety for
  typical, cleaner faces, psi = 1 changes nothing. Works on traced values.
  """
  return z * psi


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation between latents, float64.

  Gaussian latents live near a sphere; a straight line between two of them
  passes through the low-norm middle that the generator rarely saw, so walks
  follow the great circle (and lerp when a and b are parallel).

  Args:
    a, b: [d] latents.
    t: [T] positions; t = 0 gives a exactly, t = 1 gives b exactly.

  Returns:
    [T, d].
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  t = np.asarray(t, np.float64)[:, None]
  cosine = a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
  omega = np.arccos(np.clip(cosine, -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return (1 - t) * a + t * b
  return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def walk(keyframes: np.ndarray, frames_between: int) -> np.ndarray:
  """A walk through keyframes [M, d], frames_between frames between each.

  Returns:
    float32 [(M - 1) * (frames_between + 1) + 1, d]; row j * (K + 1) is
    keyframe j, bit for bit.
  """
  if len(keyframes) < 2 or frames_between < 0:
    raise ValueError(f'A walk needs at least 2 keyframes (got '
                     f'{len(keyframes)}) and frames_between >= 0 (got '
                     f'{frames_between}).')
  t = np.arange(frames_between + 1) / (frames_between + 1)
  segments = [slerp(a, b, t) for a, b in zip(keyframes[:-1], keyframes[1:])]
  frames = np.concatenate(segments + [keyframes[-1:]]).astype(np.float32)
  # float64 round trips keep keyframes exact; make that a guarantee.
  frames[::frames_between + 1] = keyframes
  return frames
