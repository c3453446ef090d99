"""The PyTorch peer of our train step: same architecture, loss and optimizer.

Modelled on ../shared/bench/torch_wgan_gp_reference.py and generalized to the
project's DCGAN and ResNet (WGAN-GP paper) models at any power-of-two
resolution and width, the critic's normalization ('none', 'layer' =
GroupNorm(1, C), 'batch') and spectral normalization, and the Wasserstein
(+ WGAN-GP), hinge and non-saturating losses. Each model is written the way a
PyTorch user would (nn.Conv2d, nearest upsampling, avg_pool2d), with the cheap
order of the commuting 1x1 shortcut and resampling. Used by
benchmarks/train_step.py --torch_reference; torch is an optional benchmark
dependency (`pip install torch==2.13.0` takes the CPU build here).
"""

from collections.abc import Callable
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


def _num_blocks(resolution: int) -> int:
  return int(math.log2(resolution)) - 2


def _generator_channels(width: int, resolution: int) -> list[int]:
  """Channels from the 4x4 block up to the last hidden block."""
  blocks = _num_blocks(resolution)
  return [min(width * 2 ** (blocks - 1 - i), 8 * width) for i in range(blocks)]


def _norm2d(kind: str, channels: int) -> nn.Module:
  if kind == 'none':
    return nn.Identity()
  if kind == 'layer':  # per example over C, H, W; per-channel affine
    return nn.GroupNorm(1, channels)
  return nn.BatchNorm2d(channels)


def _maybe_sn(layer: nn.Module, spectral_norm: bool) -> nn.Module:
  return _spectral_norm(layer) if spectral_norm else layer


def dcgan_generator(latent_dim: int, width: int, resolution: int) -> nn.Module:
  channels = _generator_channels(width, resolution)
  layers = [nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, channels[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels[0]), nn.ReLU(True)]
  for c_in, c_out in zip(channels[:-1], channels[1:]):
    layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
               nn.BatchNorm2d(c_out), nn.ReLU(True)]
  layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1), nn.Tanh()]
  return nn.Sequential(*layers)


def dcgan_critic(width: int, resolution: int, norm: str = 'none',
                 spectral_norm: bool = False) -> nn.Module:
  channels = list(reversed(_generator_channels(width, resolution)))
  layers, previous = [], 3
  for i, c in enumerate(channels):
    normalized = i > 0 and norm != 'none'
    layers.append(_maybe_sn(nn.Conv2d(previous, c, 4, 2, 1,
                                      bias=not normalized), spectral_norm))
    if normalized:
      layers.append(_norm2d(norm, c))
    layers.append(nn.LeakyReLU(0.2, True))
    previous = c
  layers += [_maybe_sn(nn.Conv2d(previous, 1, 4, 1, 0), spectral_norm),
             nn.Flatten(0)]
  return nn.Sequential(*layers)


class _UpBlock(nn.Module):
  """Shortcut: 1x1 conv, upsample; residual: norm, ReLU, upsample, 3x3 conv,
  norm, ReLU, 3x3 conv."""

  def __init__(self, c_in: int, c_out: int):
    super().__init__()
    self.shortcut = nn.Conv2d(c_in, c_out, 1)
    self.norm_0, self.conv_0 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3,
                                                               padding=1)
    self.norm_1, self.conv_1 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out,
                                                                3, padding=1)

  def forward(self, x):
    up = lambda t: F.interpolate(t, scale_factor=2, mode='nearest')
    h = self.conv_0(up(F.relu(self.norm_0(x))))
    h = self.conv_1(F.relu(self.norm_1(h)))
    return up(self.shortcut(x)) + h


class _DownBlock(nn.Module):
  """Shortcut: mean pool, 1x1 conv; residual: norm, ReLU, 3x3 conv, norm,
  ReLU, 3x3 conv, mean pool."""

  def __init__(self, c_in: int, c_out: int, norm: str, spectral_norm: bool):
    super().__init__()
    self.shortcut = _maybe_sn(nn.Conv2d(c_in, c_out, 1), spectral_norm)
    self.norm_0 = _norm2d(norm, c_in)
    self.conv_0 = _maybe_sn(nn.Conv2d(c_in, c_in, 3, padding=1), spectral_norm)
    self.norm_1 = _norm2d(norm, c_in)
    self.conv_1 = _maybe_sn(nn.Conv2d(c_in, c_out, 3, padding=1),
                            spectral_norm)

  def forward(self, x):
    h = self.conv_0(F.relu(self.norm_0(x)))
    h = F.avg_pool2d(self.conv_1(F.relu(self.norm_1(h))), 2)
    return self.shortcut(F.avg_pool2d(x, 2)) + h


def resnet_generator(latent_dim: int, width: int,
                     resolution: int) -> nn.Module:
  channels = _generator_channels(width, resolution)
  layers = [nn.Linear(latent_dim, 16 * channels[0]),
            nn.Unflatten(1, (channels[0], 4, 4))]
  previous = channels[0]
  for c in channels:
    layers.append(_UpBlock(previous, c))
    previous = c
  layers += [nn.BatchNorm2d(previous), nn.ReLU(True),
             nn.Conv2d(previous, 3, 3, padding=1), nn.Tanh()]
  return nn.Sequential(*layers)


def resnet_critic(width: int, resolution: int, norm: str = 'none',
                  spectral_norm: bool = False) -> nn.Module:
  channels = [width * min(2 ** (i + 1), 8)
              for i in range(_num_blocks(resolution))]
  layers = [_maybe_sn(nn.Conv2d(3, width, 3, padding=1), spectral_norm)]
  previous = width
  for c in channels:
    layers.append(_DownBlock(previous, c, norm, spectral_norm))
    previous = c
  layers += [nn.Flatten(1),
             _maybe_sn(nn.Linear(16 * previous, 1), spectral_norm),
             nn.Flatten(0)]
  return nn.Sequential(*layers)


def build_models(config) -> tuple[nn.Module, nn.Module]:
  """(generator, critic) for the config's model section."""
  m, res = config.model, config.dataset.resolution
  if m.g_norm != 'batch':
    raise ValueError('The PyTorch reference implements model.g_norm=batch '
                     'only.')
  generators = {'dcgan': dcgan_generator, 'resnet': resnet_generator}
  critics = {'dcgan': dcgan_critic, 'resnet': resnet_critic}
  if m.generator not in generators or m.discriminator not in critics:
    raise ValueError('The PyTorch reference implements the dcgan and resnet '
                     f'models, not {m.generator!r} / {m.discriminator!r}.')
  return (generators[m.generator](m.latent_dim, m.g_width, res),
          critics[m.discriminator](m.d_width, res, m.d_norm, m.spectral_norm))


def make_steps(config, device: str = 'cpu'
               ) -> tuple[Callable[[], float], Callable[[], float]]:
  """(critic_step, generator_step) closures; each runs one update and syncs.

  Args:
    config: the project's config (model.*, loss.*, optimizer.*, batch_size,
      dataset.resolution).
    device: 'cpu' or 'cuda'. On CUDA, float32 matmuls and convolutions may
      use TF32, as XLA's default precision does on the same GPUs.
  """
  torch.manual_seed(0)
  if device == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
  m, res, batch = config.model, config.dataset.resolution, config.batch_size
  g, d = (module.to(device) for module in build_models(config))
  opt = config.optimizer
  g_opt = torch.optim.Adam(g.parameters(), opt.g_learning_rate,
                           betas=(opt.b1, opt.b2))
  d_opt = torch.optim.Adam(d.parameters(), opt.d_learning_rate,
                           betas=(opt.b1, opt.b2))
  real = torch.rand(batch, 3, res, res, device=device) * 2 - 1
  loss_name, penalty = config.loss.name, config.loss.penalty
  if penalty not in ('none', 'wgan_gp'):
    raise ValueError(f'The PyTorch reference implements loss.penalty none '
                     f'and wgan_gp, not {penalty!r}.')

  def critic_step():
    with torch.no_grad():
      fake = g(torch.randn(batch, m.latent_dim, device=device))
    real_scores, fake_scores = d(real), d(fake)
    if loss_name == 'wasserstein':
      loss = fake_scores.mean() - real_scores.mean()
    elif loss_name == 'hinge':
      loss = F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
    else:  # non_saturating / minimax critic loss
      loss = F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    if penalty == 'wgan_gp':
      eps = torch.rand(batch, 1, 1, 1, device=device)
      mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
      grad, = torch.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
      loss = loss + config.loss.penalty_weight * (
          (grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    d_opt.zero_grad()
    loss.backward()
    d_opt.step()
    return loss.item()

  def generator_step():
    scores = d(g(torch.randn(batch, m.latent_dim, device=device)))
    loss = (F.softplus(-scores).mean() if loss_name == 'non_saturating'
            else -scores.mean())
    g_opt.zero_grad()
    loss.backward()
    g_opt.step()
    return loss.item()

  return critic_step, generator_step


def about(device: str = 'cpu') -> dict[str, Any]:
  return {'torch_version': torch.__version__,
          'torch_threads': torch.get_num_threads(), 'torch_device': device}
