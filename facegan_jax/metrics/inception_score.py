"""Inception Score (Salimans et al. 2016) from the 1008-way logits.

IS = exp(E_x KL(p(y|x) || p(y))), with p(y|x) the softmax over all 1008
logits as in the TF graph, computed on each of `num_splits` consecutive
splits; the score is the mean and standard deviation over splits.
"""

import numpy as np
from scipy import special

DEFAULT_NUM_SPLITS = 10


def inception_score(logits: np.ndarray, num_splits: int = DEFAULT_NUM_SPLITS
                    ) -> tuple[float, float]:
  """IS mean and std over splits.

  Args:
    logits: [N, 1008] (any number of classes works).
    num_splits: consecutive splits of as equal size as possible; <= N.

  Returns:
    (is_mean, is_std), std with ddof=0 as the original code.
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or logits.shape[0] < num_splits:
    raise ValueError(f'Need [N >= num_splits={num_splits}, classes] logits, '
                     f'got {logits.shape}.')
  log_p_yx = special.log_softmax(logits, axis=1)
  scores = []
  for part in np.array_split(log_p_yx, num_splits):
    # log of the split's marginal p(y), computed stably in log space.
    log_p_y = special.logsumexp(part, axis=0) - np.log(part.shape[0])
    kl = (np.exp(part) * (part - log_p_y)).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))
