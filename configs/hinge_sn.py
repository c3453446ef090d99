"""Hinge loss with spectral normalization in the critic (Miyato et al. 2018).

Adam(2e-4, b1=0, b2=0.9), n_critic=5 as in the SN-GAN paper's hinge runs.
"""

from configs import default


def get_config(arg=None):
  config = default.base_config()
  config.loss.name = 'hinge'
  config.loss.penalty = 'none'
  config.model.spectral_norm = True
  config.n_critic = 5
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 2e-4
  config.optimizer.d_learning_rate = 2e-4
  config.optimizer.b1 = 0.0
  config.optimizer.b2 = 0.9
  return default.apply_args(config, arg)
