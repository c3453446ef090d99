"""Frechet Inception Distance between two sets of features (float64).

FID = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2)).

The trace of the matrix square root is computed from eigenvalues: with
A = S_r^(1/2) (symmetric, from `eigh`), S_r S_f is similar to A S_f A, which
is symmetric positive semi-definite, so tr((S_r S_f)^(1/2)) is the sum of the
square roots of A S_f A's eigenvalues. Unlike `scipy.linalg.sqrtm` of the
non-symmetric product, this never returns complex values or needs an
epsilon retry when the covariances are singular (fewer samples than 2048).
"""

import numpy as np


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of features, in float64.

  Args:
    features: [N, D], N >= 2.

  Returns:
    mu [D] and sigma [D, D] (unbiased, ddof=1, as every FID implementation).
  """
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'Need [N >= 2, D] features, got {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  eigenvalues, eigenvectors = np.linalg.eigh(matrix)
  # Round-off can make tiny eigenvalues of a PSD matrix slightly negative.
  roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
  return (eigenvectors * roots) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray,
                     mu2: np.ndarray, sigma2: np.ndarray) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

  Args:
    mu1, mu2: [D] means.
    sigma1, sigma2: [D, D] covariances.

  Returns:
    The squared Frechet distance (what papers call FID), >= 0 up to
    round-off.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1 = np.asarray(sigma1, np.float64)
  sigma2 = np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f'Shapes differ: {mu1.shape} vs {mu2.shape}, '
                     f'{sigma1.shape} vs {sigma2.shape}.')
  root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
  product = root1 @ sigma2 @ root1
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_sqrt)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
  """FID between two feature sets [N, D] and [M, D]."""
  return frechet_distance(*gaussian_statistics(real),
                          *gaussian_statistics(fake))
