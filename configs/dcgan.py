"""DCGAN (Radford et al. 2016): non-saturating loss, one-sided label smoothing.

Adam(2e-4, b1=0.5), one critic update per generator update, batch norm in
the generator, no penalty.
"""

from configs import default


def get_config(arg=None):
  config = default.base_config()
  config.loss.name = 'non_saturating'
  config.loss.penalty = 'none'
  config.loss.label_smoothing = 0.1
  config.n_critic = 1
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 2e-4
  config.optimizer.d_learning_rate = 2e-4
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.999
  return default.apply_args(config, arg)
