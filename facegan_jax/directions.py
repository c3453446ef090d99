"""Attribute directions in latent space (InterFaceGAN) and latent edits.

  fit = fit_directions(z, labels, names)   # labels: the classifier's 0/1
  frames = edit_latents(z[0], fit.directions[fit.index('Smiling')],
                        np.linspace(-3, 3, 7))

InterFaceGAN (Shen et al., 2020) finds that a well-trained generator
separates a binary attribute by a hyperplane in its latent space: the plane's
unit normal n is the attribute's direction, and z + s * n shows more of it
for s > 0 and less for s < 0.

Each plane is fitted by ridge least squares on +-1 targets (with an
intercept), all attributes in one linear solve, rather than by InterFaceGAN's
linear SVM: for Gaussian latents, as z is, the least-squares normal is
proportional to the true one for any labelling that depends on z only
through one direction (the labels need not be linear in z; Brillinger,
1982), it needs no iterations or step sizes, and it costs one [d, d] solve
for every attribute together. The normal is oriented so that moving along it
increases the attribute.

numpy only.
"""

from collections.abc import Sequence
import dataclasses
import os

import numpy as np

# An attribute with fewer samples on either side is not fitted.
MIN_PER_CLASS = 10
# Where `python -m facegan_jax.attributes directions` saves a run's fit.
DIRECTIONS_FILE = 'directions.npz'
# Share of the samples held out to measure how well a plane separates.
HELDOUT_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class DirectionFit:
  """One fitted latent direction per attribute.

  Attributes:
    names: the attributes.
    directions: float32 [A, d]; unit normals, zeros for skipped attributes.
    heldout_accuracy: [A] share of held-out samples on the right side of a
      plane fitted to the others (NaN when skipped).
    fit_accuracy: [A] the same on the samples the final plane was fitted to.
    baseline_accuracy: [A] share of the more common value (what a plane that
      ignores z gets).
    positives: int [A] samples labelled 1.
    num_samples: N.
    skipped: {name: why} of the attributes not fitted.
  """
  names: tuple[str, ...]
  directions: np.ndarray
  heldout_accuracy: np.ndarray
  fit_accuracy: np.ndarray
  baseline_accuracy: np.ndarray
  positives: np.ndarray
  num_samples: int
  skipped: dict[str, str]

  def index(self, name: str) -> int:
    """Row of `name`; ValueError listing the fitted attributes."""
    if name not in self.names or name in self.skipped:
      fitted = [n for n in self.names if n not in self.skipped]
      why = f' ({self.skipped[name]})' if name in self.skipped else ''
      raise ValueError(f'No direction for {name!r}{why}; fitted: '
                       f'{", ".join(fitted) or "none"}.')
    return self.names.index(name)


def _least_squares_planes(latents: np.ndarray, labels: np.ndarray,
                          ridge: float) -> tuple[np.ndarray, np.ndarray]:
  """(normals [d, A], offsets [A]): z . normal + offset ~ +-1 targets."""
  mean = latents.mean(axis=0)
  centred = latents - mean
  targets = 2.0 * labels - 1.0
  target_mean = targets.mean(axis=0)
  gram = centred.T @ centred + ridge * np.eye(latents.shape[1])
  normals = np.linalg.solve(gram, centred.T @ (targets - target_mean))
  return normals, target_mean - mean @ normals


def _accuracy(latents: np.ndarray, labels: np.ndarray, normals: np.ndarray,
              offsets: np.ndarray) -> np.ndarray:
  return ((latents @ normals + offsets > 0) == labels.astype(bool)).mean(0)


def _skip_reasons(names: Sequence[str], positives: np.ndarray, num: int,
                  min_per_class: int) -> dict[str, str]:
  reasons = {}
  for name, count in zip(names, positives):
    fewer = min(count, num - count)
    if fewer < min_per_class:
      side = 'have' if count == fewer else 'lack'
      reasons[name] = (f'only {fewer} of {num} samples {side} it (need '
                       f'{min_per_class} on each side; use more samples)')
  return reasons


def fit_directions(latents: np.ndarray, labels: np.ndarray,
                   names: Sequence[str], *,
                   min_per_class: int = MIN_PER_CLASS,
                   heldout_fraction: float = HELDOUT_FRACTION,
                   ridge: float = 1.0, seed: int = 0) -> DirectionFit:
  """One unit normal per attribute, separating its 1s from its 0s.

  Args:
    latents: [N, d] latent vectors.
    labels: [N, A] of 0/1 (e.g. the attribute classifier's answers on the
      images of `latents`).
    names: the A attribute names.
    min_per_class: attributes with fewer samples labelled 1, or 0, are
      skipped (listed in `skipped`, zero direction, NaN accuracy).
    heldout_fraction: the held-out accuracy comes from a plane fitted to
      the rest of a seeded permutation; the direction returned is fitted to
      every sample.
    ridge: added to the diagonal of the latents' scatter matrix (keeps the
      solve stable when N is close to d).
    seed: the held-out split.

  Returns:
    A DirectionFit.

  Raises:
    ValueError: shapes that do not match, labels other than 0/1, or too
      few samples to hold any out.
  """
  latents = np.asarray(latents, np.float64)
  labels = np.asarray(labels)
  names = tuple(names)
  num = len(latents)
  if latents.ndim != 2 or labels.shape != (num, len(names)):
    raise ValueError(f'Expected latents [N, d] and labels [N, {len(names)}]; '
                     f'got {latents.shape} and {labels.shape}.')
  if not np.isin(labels, (0, 1)).all():
    raise ValueError('Labels must be 0 or 1.')
  num_heldout = int(round(num * heldout_fraction))
  if not 0 < num_heldout < num - 1:
    raise ValueError(f'{num} samples with heldout_fraction={heldout_fraction} '
                     'leave no held-out or no fitting samples; use more.')
  labels = labels.astype(np.float64)
  positives = labels.sum(axis=0).astype(np.int64)
  skipped = _skip_reasons(names, positives, num, min_per_class)
  keep = np.array([name not in skipped for name in names], bool)

  order = np.random.default_rng(seed).permutation(num)
  train, heldout = order[num_heldout:], order[:num_heldout]
  normals, offsets = _least_squares_planes(latents[train], labels[train],
                                           ridge)
  heldout_accuracy = _accuracy(latents[heldout], labels[heldout], normals,
                               offsets)
  normals, offsets = _least_squares_planes(latents, labels, ridge)
  fit_accuracy = _accuracy(latents, labels, normals, offsets)

  norms = np.linalg.norm(normals, axis=0)
  directions = np.where(keep & (norms > 0), normals / np.maximum(norms, 1e-30),
                        0.0).T
  nan = np.full(len(names), np.nan)
  share = positives / num
  return DirectionFit(
      names=names, directions=directions.astype(np.float32),
      heldout_accuracy=np.where(keep, heldout_accuracy, nan),
      fit_accuracy=np.where(keep, fit_accuracy, nan),
      baseline_accuracy=np.maximum(share, 1 - share),
      positives=positives, num_samples=num, skipped=skipped)


def edit_latents(z: np.ndarray, direction: np.ndarray,
                 strengths: Sequence[float]) -> np.ndarray:
  """z moved along `direction` by each strength: float32 [S, d].

  Args:
    z: one latent [d].
    direction: a unit direction [d] (a row of `DirectionFit.directions`).
    strengths: S signed distances; 0 gives z itself.
  """
  z, direction = np.asarray(z, np.float64), np.asarray(direction, np.float64)
  if z.ndim != 1 or direction.shape != z.shape:
    raise ValueError(f'Expected z [d] and direction [d]; got {z.shape} and '
                     f'{direction.shape}.')
  strengths = np.asarray(strengths, np.float64).reshape(-1, 1)
  return (z + strengths * direction).astype(np.float32)


def condition(direction: np.ndarray, others: np.ndarray) -> np.ndarray:
  """`direction` with the span of `others` projected out, unit length.

  InterFaceGAN's conditional manipulation: editing along the result changes
  the primary attribute while leaving the others' planes where they are
  (e.g. age without glasses, which old faces in the data tend to have).

  Args:
    direction: [d].
    others: [K, d] directions to hold fixed (any length, not necessarily
      orthogonal to each other).

  Raises:
    ValueError: `direction` (almost) lies in the span of `others`.
  """
  direction = np.asarray(direction, np.float64)
  others = np.asarray(others, np.float64).reshape(-1, direction.shape[0])
  residual = direction
  if others.size:
    # An orthonormal basis of their span; zero rows (skipped attributes) and
    # repeated directions add nothing.
    basis, singular, _ = np.linalg.svd(others.T, full_matrices=False)
    basis = basis[:, singular > 1e-9 * max(singular.max(), 1e-30)]
    residual = direction - basis @ (basis.T @ direction)
  norm = np.linalg.norm(residual)
  if norm < 1e-6 * max(np.linalg.norm(direction), 1e-30):
    raise ValueError('The direction lies in the span of the others: nothing '
                     'is left after holding them fixed.')
  return (residual / norm).astype(np.float32)


def load_saved(workdir: str) -> tuple[list[str], np.ndarray]:
  """(names, unit directions [A, d]; zero rows: skipped) saved with a run.

  Args:
    workdir: the run's workdir (or its best/ or checkpoints/ folder).

  Raises:
    ValueError: none saved; says how to fit them.
  """
  folder = os.path.expanduser(workdir).rstrip('/')
  if os.path.basename(folder) in ('best', 'checkpoints'):
    folder = os.path.dirname(folder)
  path = os.path.join(folder, DIRECTIONS_FILE)
  if not os.path.isfile(path):
    raise ValueError(
        f'{path} does not exist: fit the run\'s attribute directions first '
        f'(python -m facegan_jax.attributes directions --workdir={folder} '
        '--classifier=CLASSIFIER).')
  with np.load(path) as saved:
    return [str(n) for n in saved['names']], saved['directions']
