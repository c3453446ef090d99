"""optax optimizers and learning-rate schedules for the two players.

Schedules count generator steps. The critic's optimizer is updated n_critic
times per generator step, so its schedule divides its own update count by
n_critic: both players follow the same calendar.
"""

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
  return tx
