"""Kernel Inception Distance (Binkowski et al. 2018).

The unbiased estimator of the squared MMD with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets of both sets:

  MMD^2 = 1/(m(m-1)) sum_{i!=j} k(r_i, r_j) + 1/(m(m-1)) sum_{i!=j} k(f_i, f_j)
          - 2/m^2 sum_{i,j} k(r_i, f_j).
"""

import numpy as np

DEFAULT_NUM_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x.y / d + 1)^3 for [N, d] x [M, d] -> [N, M] (float64)."""
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(real: np.ndarray, fake: np.ndarray) -> float:
  """Unbiased MMD^2 between two equal-size samples [m, d]."""
  m = real.shape[0]
  if fake.shape[0] != m or m < 2:
    raise ValueError(f'Need two samples of equal size >= 2, got '
                     f'{real.shape[0]} and {fake.shape[0]}.')
  k_rr = polynomial_kernel(real, real)
  k_ff = polynomial_kernel(fake, fake)
  k_rf = polynomial_kernel(real, fake)
  within = (k_rr.sum() - np.trace(k_rr) + k_ff.sum() - np.trace(k_ff)) / (
      m * (m - 1))
  return float(within - 2.0 * k_rf.sum() / (m * m))


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *,
                              num_subsets: int = DEFAULT_NUM_SUBSETS,
                              subset_size: int = DEFAULT_SUBSET_SIZE,
                              seed: int = 0) -> tuple[float, float]:
  """KID: mean and standard deviation of MMD^2 over random subsets.

  Args:
    real: [N, d] features.
    fake: [M, d] features.
    num_subsets: subsets drawn (each without replacement from each set).
    subset_size: capped at min(N, M).
    seed: for the subset draws, so a score can be reproduced.

  Returns:
    (kid_mean, kid_std); std is over subsets (ddof=0).
  """
  real = np.asarray(real, np.float64)
  fake = np.asarray(fake, np.float64)
  m = min(subset_size, real.shape[0], fake.shape[0])
  rng = np.random.default_rng(seed)
  mmds = np.array([
      mmd2_unbiased(real[rng.choice(real.shape[0], m, replace=False)],
                    fake[rng.choice(fake.shape[0], m, replace=False)])
      for _ in range(num_subsets)])
  return float(mmds.mean()), float(mmds.std())
