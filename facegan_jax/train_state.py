"""The whole state of a GAN run as one pytree."""

from typing import Any

import flax
import jax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes; checkpointed as a whole.

  Attributes:
    step: generator updates done so far (int32 scalar).
    g_params: generator parameters.
    d_params: critic parameters.
    g_opt_state: generator optimizer state (with optimizer.lookahead_every,
      Lookahead's slow weights too).
    d_opt_state: critic optimizer state (likewise).
    ema_params: exponential moving average of g_params (used for samples and
      evaluation).
    batch_stats: non-trainable model state, {'generator': ...,
      'discriminator': ...} (batch-norm averages, spectral-norm vectors);
      empty dicts for models without any. With loss.lecam_weight also
      'critic_scores': {'real', 'fake'}, the moving averages of the critic's
      mean scores that LeCam regularization anchors to.
    ema_batch_stats: the generator's non-trainable state averaged with the
      same decay as ema_params, so the EMA generator normalizes with
      statistics of the weights it runs with, not of the raw generator's;
      with config.ema_standing_stats, replaced by the EMA generator's own
      (`standing_stats`) before every grid, evaluation and checkpoint.
    rng: base PRNG key (raw uint32[2]); each step derives its own by
      fold_in(rng, step), so a resumed run draws the same numbers.
  """
  step: jax.Array
  g_params: PyTree
  d_params: PyTree
  g_opt_state: PyTree
  d_opt_state: PyTree
  ema_params: PyTree
  batch_stats: PyTree
  ema_batch_stats: PyTree
  rng: jax.Array

  def generator_variables(self, use_ema: bool = True) -> tuple[PyTree, PyTree]:
    """(params, batch_stats) of the EMA generator, or of the raw one."""
    if use_ema:
      return self.ema_params, self.ema_batch_stats
    return self.g_params, self.batch_stats['generator']
