"""DRAGAN (Kodali et al. 2017): the non-saturating loss with a gradient penalty
around perturbed real data (lambda 10).

Adam(1e-4, b1=0.5, b2=0.9), one critic update per generator update.
"""

from configs import default


def get_config(arg=None):
  config = default.base_config()
  config.loss.name = 'non_saturating'
  config.loss.penalty = 'dragan'
  config.loss.penalty_weight = 10.0
  config.n_critic = 1
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 1e-4
  config.optimizer.d_learning_rate = 1e-4
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.9
  return default.apply_args(config, arg)
