"""The PyTorch peer of our train step: same architecture, loss and optimizer.

Modelled on ../shared/bench/torch_wgan_gp_reference.py and generalized to the
project's DCGAN at any power-of-two resolution and width, and to the
Wasserstein (+ WGAN-GP), hinge and non-saturating losses. Used by
benchmarks/train_step.py --torch_reference; torch is an optional benchmark
dependency (`pip install torch==2.13.0` takes the CPU build here).
"""

import math
import time

import torch
from torch import nn


def _dcgan_channels(width: int, resolution: int) -> list[int]:
  """Channels from the 4x4 block up to the last hidden block."""
  blocks = int(math.log2(resolution)) - 2  # number of 2x upsamplings
  return [min(width * 2 ** (blocks - 1 - i), 8 * width) for i in range(blocks)]


def dcgan_generator(latent_dim: int, width: int, resolution: int) -> nn.Module:
  channels = _dcgan_channels(width, resolution)
  layers = [nn.ConvTranspose2d(latent_dim, channels[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels[0]), nn.ReLU(True)]
  for c_in, c_out in zip(channels[:-1], channels[1:]):
    layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
               nn.BatchNorm2d(c_out), nn.ReLU(True)]
  layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1), nn.Tanh()]
  return nn.Sequential(*layers)


def dcgan_critic(width: int, resolution: int) -> nn.Module:
  channels = list(reversed(_dcgan_channels(width, resolution)))
  layers, previous = [], 3
  for c in channels:
    layers += [nn.Conv2d(previous, c, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    previous = c
  layers += [nn.Conv2d(previous, 1, 4, 1, 0), nn.Flatten(0)]
  return nn.Sequential(*layers)


def time_iteration(config, steps: int = 3) -> dict[str, float]:
  """Median-free mean times of the critic step, generator step, iteration.

  Args:
    config: the project's config (model.*, loss.*, optimizer.*, batch_size,
      n_critic, dataset.resolution).
    steps: timed repetitions after one warm-up of each.
  """
  torch.manual_seed(0)
  m, res, batch = config.model, config.dataset.resolution, config.batch_size
  if m.generator != 'dcgan' or m.discriminator != 'dcgan':
    raise ValueError('The PyTorch reference implements the DCGAN models only.')
  g = dcgan_generator(m.latent_dim, m.g_width, res)
  d = dcgan_critic(m.d_width, res)
  opt = config.optimizer
  g_opt = torch.optim.Adam(g.parameters(), opt.g_learning_rate,
                           betas=(opt.b1, opt.b2))
  d_opt = torch.optim.Adam(d.parameters(), opt.d_learning_rate,
                           betas=(opt.b1, opt.b2))
  real = torch.rand(batch, 3, res, res) * 2 - 1
  loss_name, penalty = config.loss.name, config.loss.penalty
  softplus = nn.functional.softplus

  def critic_step():
    with torch.no_grad():
      fake = g(torch.randn(batch, m.latent_dim, 1, 1))
    real_scores, fake_scores = d(real), d(fake)
    if loss_name == 'wasserstein':
      loss = fake_scores.mean() - real_scores.mean()
    elif loss_name == 'hinge':
      loss = (torch.relu(1 - real_scores).mean() +
              torch.relu(1 + fake_scores).mean())
    else:  # non_saturating / minimax critic loss
      loss = softplus(-real_scores).mean() + softplus(fake_scores).mean()
    if penalty == 'wgan_gp':
      eps = torch.rand(batch, 1, 1, 1)
      mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
      grad, = torch.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
      loss = loss + config.loss.penalty_weight * (
          (grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    d_opt.zero_grad()
    loss.backward()
    d_opt.step()
    return loss.item()

  def generator_step():
    scores = d(g(torch.randn(batch, m.latent_dim, 1, 1)))
    loss = (softplus(-scores).mean() if loss_name == 'non_saturating'
            else -scores.mean())
    g_opt.zero_grad()
    loss.backward()
    g_opt.step()
    return loss.item()

  critic_step()
  generator_step()
  start = time.perf_counter()
  for _ in range(steps):
    critic_step()
  critic_s = (time.perf_counter() - start) / steps
  start = time.perf_counter()
  for _ in range(steps):
    generator_step()
  generator_s = (time.perf_counter() - start) / steps
  return {
      'torch_version': torch.__version__,
      'torch_threads': torch.get_num_threads(),
      'torch_critic_step_s': critic_s,
      'torch_generator_step_s': generator_s,
      'torch_iteration_s': config.n_critic * critic_s + generator_s,
  }
