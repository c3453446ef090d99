"""WGAN-GP (Gulrajani et al. 2017): the paper's settings, DCGAN-64 models.

Adam(1e-4, b1=0, b2=0.9), n_critic=5, lambda=10, batch 64, 64x64 images,
no normalization in the critic (batch norm is incompatible with the penalty).
"""

from configs import default


def get_config(arg=None):
  config = default.base_config()
  config.loss.name = 'wasserstein'
  config.loss.penalty = 'wgan_gp'
  config.loss.penalty_weight = 10.0
  config.n_critic = 5
  config.batch_size = 64
  config.dataset.resolution = 64
  config.model.d_norm = 'none'
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 1e-4
  config.optimizer.d_learning_rate = 1e-4
  config.optimizer.b1 = 0.0
  config.optimizer.b2 = 0.9
  return default.apply_args(config, arg)
