"""Least-squares GAN (Mao et al. 2017): a-b-c = 0-1-1 targets.

Adam(2e-4, b1=0.5), one critic update per generator update.
"""

from configs import default


def get_config(arg=None):
  config = default.base_config()
  config.loss.name = 'least_squares'
  config.loss.penalty = 'none'
  config.n_critic = 1
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 2e-4
  config.optimizer.d_learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.999
  return default.apply_args(config, arg)
