"""StyleGAN2 (Karras et al. 2020) with DiffAugment, for a few thousand faces.

Style-based generator (mapping network, modulated/demodulated convolutions,
noise inputs, skip toRGB outputs, style mixing) and residual critic with
minibatch standard deviation; non-saturating loss with lazy R1 (every 16
critic updates); Adam(2.5e-3, b1=0, b2=0.99); one critic update per
generator update; DiffAugment color,translation,cutout (the published
low-data results at 10k images rely on it: Zhao et al. 2020).

StyleGAN2's path length regularization is off here (it costs a second
derivative of the synthesis network every 4th generator update, which a CPU
feels); turn it on with --config.loss.path_length_weight=2, as
configs/celeba64.py does.

R1's gamma follows StyleGAN2-ADA's heuristic 0.0002 * resolution^2 /
batch_size, computed from the recipe's values: set loss.penalty_weight
yourself when overriding batch_size or res.

  python main.py --config=configs/stylegan2.py:res=32,quick --workdir=...
"""

from configs import default


def r1_gamma(resolution: int, batch_size: int) -> float:
  """StyleGAN2-ADA's resolution-aware R1 weight."""
  return 0.0002 * resolution ** 2 / batch_size


def get_config(arg=None):
  config = default.base_config()
  config.model.generator = 'stylegan2'
  config.model.discriminator = 'stylegan2'
  config.model.g_norm = 'none'
  config.model.d_norm = 'none'
  config.model.latent_dim = 128
  config.model.g_width = 32
  config.model.d_width = 32
  config.model.mapping_layers = 8
  config.model.style_mixing_prob = 0.9
  config.loss.name = 'non_saturating'
  config.loss.penalty = 'r1'
  config.loss.r1_every = 16
  config.n_critic = 1
  config.batch_size = 32
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 2.5e-3
  config.optimizer.d_learning_rate = 2.5e-3
  config.optimizer.b1 = 0.0
  config.optimizer.b2 = 0.99
  config.ema_decay = 0.999
  config.dataset.diffaugment = 'color,translation,cutout'
  config = default.apply_args(config, arg)
  if default.parse_arg(arg).get('quick'):
    config.model.mapping_layers = 2
  config.loss.penalty_weight = r1_gamma(config.dataset.resolution,
                                        config.batch_size)
  return config
