"""PacGAN packing (Lin et al. 2018): the critic scores m samples at once.

Packed together, all real or all fake, m samples show the critic how alike
the generator's samples are, so a generator that covers little of the data
is easier to tell apart. Only the critic's first layer grows (m times the
input channels) while it runs on m times fewer inputs, so a packed critic
costs less than an unpacked one. Scores are per pack: [B / m].
"""

from typing import Any

import flax.linen as nn
import jax

Array = jax.Array


def pack(images: Array, m: int) -> Array:
  """[B, H, W, C] -> [B / m, H, W, m * C]: each m consecutive samples stacked
  along the channels.

  Raises:
    ValueError: if m does not divide B.
  """
  b, h, w, c = images.shape
  if b % m:
    raise ValueError(
        f'model.d_pack={m} packs {m} samples per critic input, but a batch '
        f'has {b}: use a batch size divisible by {m}.')
  return (images.reshape(b // m, m, h, w, c).transpose(0, 2, 3, 1, 4)
          .reshape(b // m, h, w, m * c))


class PackedCritic(nn.Module):
  """A critic of packs: images [B, R, R, 3] -> scores [B / pack].

  Attributes:
    critic: the unpacked critic, built for 3 * pack input channels (its
      first layer infers them).
    pack: samples per critic input (m).
  """
  critic: nn.Module
  pack: int

  def __call__(self, images: Array, labels: Any = None, *,
               train: bool) -> Array:
    if labels is not None:
      raise ValueError('A packed critic scores several samples at once and '
                       'cannot condition on one label vector each: set '
                       'model.d_pack=1 for a conditional run.')
    return self.critic(pack(images, self.pack), train=train)
