"""optax optimizers and learning-rate schedules for the two players.

Schedules count generator steps. The critic's optimizer is updated n_critic
times per generator step, so its schedule divides its own update count by
n_critic: both players follow the same calendar.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('adam', 'rmsprop')
SCHEDULES = ('constant', 'step', 'cosine')


def create_schedule(opt_config: ml_collections.ConfigDict, peak_lr: float,
                    num_steps: int) -> optax.Schedule:
  """Learning rate as a function of the generator step.

  Args:
    opt_config: the `optimizer` config.
    peak_lr: the learning rate after warm-up.
    num_steps: total generator steps (the cosine schedule decays over them).
  """
  warmup = opt_config.warmup_steps
  name = opt_config.schedule
  if name == 'constant':
    main = optax.constant_schedule(peak_lr)
  elif name == 'step':
    # StepLR: multiply by gamma every `step_every` steps.
    main = optax.exponential_decay(
        peak_lr, transition_steps=opt_config.step_every,
        decay_rate=opt_config.step_gamma, staircase=True)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(peak_lr, max(num_steps - warmup, 1))
  else:
    raise ValueError(f'Unknown optimizer.schedule {name!r}; '
                     f'valid: {", ".join(SCHEDULES)}')
  if warmup <= 0:
    return main
  ramp = optax.linear_schedule(0.0, peak_lr, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def create_optimizer(opt_config: ml_collections.ConfigDict,
                     schedule: optax.Schedule,
                     updates_per_step: int = 1) -> optax.GradientTransformation:
  """Adam or RMSProp with optional global-norm clipping.

  Args:
    opt_config: the `optimizer` config.
    schedule: learning rate per generator step (from `create_schedule`).
    updates_per_step: optimizer updates per generator step (n_critic for the
      critic), used to map the optimizer's update count to the step.
  """
  def per_update(count):
    return schedule(count // updates_per_step)

  if opt_config.name == 'adam':
    tx = optax.adam(per_update, b1=opt_config.b1, b2=opt_config.b2,
                    eps=opt_config.eps)
  elif opt_config.name == 'rmsprop':
    tx = optax.rmsprop(per_update, decay=opt_config.rmsprop_decay,
                       eps=opt_config.eps)
  else:
    raise ValueError(f'Unknown optimizer.name {opt_config.name!r}; '
                     f'valid: {", ".join(OPTIMIZERS)}')
  if opt_config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
  if opt_config.lookahead_every:
    tx = optax.chain(tx, lookahead_slow_weights())
  return tx


class LookaheadState(NamedTuple):
  lookahead_slow: optax.Params  # The weights the fast ones return to.


def lookahead_slow_weights() -> optax.GradientTransformation:
  """Keeps Lookahead's slow weights in the optimizer state (so checkpoints
  and resumes carry them); `lookahead_sync` moves them.

  The pull-back runs as its own function every k steps rather than inside
  each update, where even a masked no-op would cost every step a pass over
  the weights. Unlike `optax.lookahead`, the params stay plain arrays that
  the models apply directly.
  """
  def init(params):
    return LookaheadState(jax.tree_util.tree_map(jnp.copy, params))

  def update(updates, state, params=None):
    del params
    return updates, state

  return optax.GradientTransformation(init, update)


def lookahead_sync(params: optax.Params, opt_state: optax.OptState,
                   alpha: float) -> tuple[optax.Params, optax.OptState]:
  """Lookahead's synchronization (Zhang et al. 2019): the slow weights move
  `alpha` of the way to the fast ones, and the fast ones restart there.

  Called for both players on the same steps, this is Lookahead-minmax
  (Chavdarova et al. 2021): the pull-back damps the players' rotation
  around each other and averages out minibatch noise. The optimizer's
  moments are kept.
  """
  slow = optax.tree_utils.tree_get(opt_state, 'lookahead_slow')
  slow = jax.tree_util.tree_map(lambda s, f: s + alpha * (f - s), slow,
                                params)
  fast = jax.tree_util.tree_map(jnp.copy, slow)  # Not aliases: donated.
  return fast, optax.tree_utils.tree_set(opt_state, lookahead_slow=slow)


def lookahead_restarted_at(opt_state: optax.OptState,
                           params: optax.Params) -> optax.OptState:
  """`opt_state` with Lookahead's slow weights, if it keeps any, set to
  `params`: for weights loaded into a fresh state (`init_from`)."""
  if optax.tree_utils.tree_get(opt_state, 'lookahead_slow') is None:
    return opt_state
  return optax.tree_utils.tree_set(
      opt_state, lookahead_slow=jax.tree_util.tree_map(jnp.copy, params))
