"""All metrics of one evaluation in one dict: FID, KID, IS, precision/recall."""

from collections.abc import Sequence

import numpy as np

from facegan_jax.metrics import fid
from facegan_jax.metrics import inception_score
from facegan_jax.metrics import kid
from facegan_jax.metrics import precision_recall
from facegan_jax.metrics import reference_stats

ALL_METRICS = ('fid', 'kid', 'is', 'precision_recall')


def compute_all(real_features: np.ndarray | reference_stats.ReferenceStatistics,
                fake_features: np.ndarray,
                real_logits: np.ndarray | None = None,
                fake_logits: np.ndarray | None = None, *,
                metrics: Sequence[str] = ALL_METRICS,
                kid_num_subsets: int = kid.DEFAULT_NUM_SUBSETS,
                kid_subset_size: int = kid.DEFAULT_SUBSET_SIZE,
                is_num_splits: int = inception_score.DEFAULT_NUM_SPLITS,
                pr_k: int = precision_recall.DEFAULT_K,
                seed: int = 0) -> dict[str, float]:
  """Computes every requested metric of generated vs real features.

  Args:
    real_features: [N, 2048] pool3 features of real images, or cached
      `ReferenceStatistics` (their mu/sigma are reused for FID).
    fake_features: [M, 2048] pool3 features of generated images.
    real_logits: unused by the metrics (IS scores generated images only);
      accepted so callers can pass both extractor outputs symmetrically.
    fake_logits: [M, 1008] logits of generated images; None (weights
      without a classifier) makes is_mean/is_std NaN.
    metrics: subset of ALL_METRICS to compute; the others are NaN.
    kid_num_subsets, kid_subset_size: KID subsets (size capped by N, M).
    is_num_splits: IS splits.
    pr_k: neighbourhood size of precision/recall.
    seed: KID subset draws.

  Returns:
    {'fid', 'kid_mean', 'kid_std', 'is_mean', 'is_std', 'precision',
     'recall', 'num_real', 'num_fake'}; floats (counts as floats too, so
    the dict can go straight to a metric writer).
  """
  del real_logits  # See the docstring.
  unknown = set(metrics) - set(ALL_METRICS)
  if unknown:
    raise ValueError(f'Unknown metrics {sorted(unknown)}; choose from '
                     f'{ALL_METRICS}.')
  if isinstance(real_features, reference_stats.ReferenceStatistics):
    real_mu, real_sigma = real_features.mu, real_features.sigma
    real_features = real_features.features
  else:
    real_mu = real_sigma = None
  real_features = np.asarray(real_features, np.float32)
  fake_features = np.asarray(fake_features, np.float32)
  nan = float('nan')
  result = dict(fid=nan, kid_mean=nan, kid_std=nan, is_mean=nan, is_std=nan,
                precision=nan, recall=nan,
                num_real=float(real_features.shape[0]),
                num_fake=float(fake_features.shape[0]))
  if 'fid' in metrics:
    if real_mu is None:
      real_mu, real_sigma = fid.gaussian_statistics(real_features)
    result['fid'] = fid.frechet_distance(
        real_mu, real_sigma, *fid.gaussian_statistics(fake_features))
  if 'kid' in metrics:
    result['kid_mean'], result['kid_std'] = kid.kernel_inception_distance(
        real_features, fake_features, num_subsets=kid_num_subsets,
        subset_size=kid_subset_size, seed=seed)
  if 'is' in metrics and fake_logits is not None:
    result['is_mean'], result['is_std'] = inception_score.inception_score(
        fake_logits, is_num_splits)
  if 'precision_recall' in metrics:
    result['precision'], result['recall'] = precision_recall.precision_recall(
        real_features, fake_features, k=pr_k)
  return result
