"""The training loop: `train_and_evaluate(config, workdir)`.

Creates the mesh, the sharded state (restored from the newest checkpoint in
`workdir` when there is one), the input pipeline positioned where the state
stopped, and runs the jitted step, reporting, sampling and checkpointing.
"""

import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers
from clu import periodic_actions

import input_pipeline
from facegan_jax import checkpointing
from facegan_jax import training_evaluator
from facegan_jax import monitoring
from facegan_jax import partitioning
from facegan_jax import train_step as train_step_lib
from facegan_jax.config_validation import validate_config

# The fixed latent vectors for sample grids come from this stream, apart from
# the training randomness, so grids are comparable across runs and resumes.
_SAMPLE_SEED_OFFSET = 1_000_003


# Rollbacks after non-finite losses before giving up (nan_rollback_lr_scale).
_MAX_ROLLBACKS = 3


class NonFiniteLossError(FloatingPointError):
  """A loss or metric became NaN or Inf."""


class _StopRequest:
  """SIGTERM/SIGINT: the first finishes the step and saves; a second exits."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      print(f'Second signal {signum}: exiting now without saving.', flush=True)
      os._exit(128 + signum)
    self.requested = True
    print(f'Signal {signum}: finishing the current step, saving a checkpoint '
          'and exiting (send it again to exit at once).', flush=True)


def _check_finite(step: int, scalars: dict[str, float]) -> None:
  bad = sorted(k for k, v in scalars.items() if not np.isfinite(v))
  if bad:
    raise NonFiniteLossError(
        f'Non-finite values at step {step}: '
        + ', '.join(f'{k}={scalars[k]}' for k in bad) +
        '. The last checkpoint in the workdir is from before this; lower the '
        'learning rates (optimizer.g_learning_rate / d_learning_rate) or '
        'enable optimizer.grad_clip_norm and resume.')


def _run_metadata(config: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
  """The `meta` stored beside each checkpoint."""
  return {
      'config': config.to_dict(),
      'step': step,
      # The input pipeline is a pure function of (seed, process count,
      # position), so the number of local batches consumed is the whole data
      # state.
      'data_batches_consumed': step,
      'images_seen': step * config.n_critic * config.batch_size,
  }


def _write_sample_grids(writer, sample_fn, state, z, workdir, step) -> None:
  grids = {}
  for name, params in (('samples', state.g_params),
                       ('samples_ema', state.ema_params)):
    images = jax.device_get(sample_fn(params, state.batch_stats['generator'], z))
    grids[name] = monitoring.image_grid(images)
  if jax.process_index() == 0:
    monitoring.save_png(grids['samples_ema'],
                        os.path.join(workdir, 'samples', f'ema_{step:07d}.png'))
    monitoring.save_png(grids['samples'],
                        os.path.join(workdir, 'samples', f'raw_{step:07d}.png'))
  writer.write_images(step, {k: v[None] for k, v in grids.items()})


def _with_weights_from(state, run_dir: str, state_sharding):
  """`state` with the models' weights of another run's newest checkpoint.

  Optimizer states, step and rng stay fresh: this starts a new run.
  """
  weights = checkpointing.load_weights(run_dir)
  for name, tree in weights.items():
    expected = jax.tree_util.tree_map(np.shape, getattr(state, name))
    if jax.tree_util.tree_map(np.shape, tree) != expected:
      raise ValueError(
          f'init_from={run_dir!r}: its {name} do not match the models of this '
          'config; use the same model.* and dataset.resolution settings.')
  return jax.device_put(state.replace(**weights), state_sharding)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Any:
  """Trains until `config.num_train_steps`; returns the final TrainState.

  With `nan_rollback_lr_scale` in (0, 1), a non-finite loss does not end the
  run: it resumes from the last checkpoint (never a non-finite one) with both
  learning rates scaled, up to _MAX_ROLLBACKS times.
  """
  for rollback in range(_MAX_ROLLBACKS + 1):
    try:
      return _train(config, workdir)
    except NonFiniteLossError as error:
      scale = config.nan_rollback_lr_scale
      if not 0 < scale < 1 or rollback == _MAX_ROLLBACKS:
        raise
      print(f'{error}\nRolling back to the last checkpoint with learning '
            f'rates x{scale}.', flush=True)
      config = ml_collections.ConfigDict(config.to_dict())
      config.optimizer.g_learning_rate *= scale
      config.optimizer.d_learning_rate *= scale
      config.allow_config_change = True


def _train(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """One attempt of `train_and_evaluate`."""
  validate_config(config)
  input_pipeline.validate_dataset_config(config.dataset)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)

  mesh = partitioning.create_mesh()
  partitioning.check_batch_size(config.batch_size, mesh)

  program = train_step_lib.build_program(config, mesh)
  run_rng = jax.random.PRNGKey(config.seed)

  checkpointer = checkpointing.Checkpointer(
      os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints,
      checkpoint_every=config.checkpoint_every)
  restored = checkpointer.restore_latest(
      checkpointing.abstract_with_shardings(program.abstract_state,
                                            program.state_sharding))
  if restored is not None:
    state, meta = restored
    checkpointing.check_resume_config(meta['config'], config)
    print(f'Resuming from step {int(state.step)} in {workdir}.', flush=True)
  else:
    state = program.init(run_rng)
    if config.init_from:
      state = _with_weights_from(state, config.init_from, program.state_sharding)
      print(f'Initialized weights from {config.init_from}.', flush=True)
  start_step = int(state.step)

  local_batch_size = config.batch_size // jax.process_count()
  dataset = input_pipeline.create_dataset(
      config.dataset, local_batch_size=config.n_critic * local_batch_size,
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), start_batch=start_step)
  batches = dataset.as_numpy_iterator()

  sample_z = jax.random.normal(
      jax.random.PRNGKey(config.seed + _SAMPLE_SEED_OFFSET),
      (config.num_samples, config.model.latent_dim))

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(checkpointing.flatten_config(config.to_dict()))

  def next_local_batch():
    images = next(batches)['image']
    return images.reshape((config.n_critic, local_batch_size) + images.shape[1:])

  images_per_step = config.n_critic * config.batch_size
  meter = monitoring.ThroughputMeter(start_step, images_per_step)
  started = time.perf_counter()
  print(f'Training {config.model.generator}/{config.model.discriminator} '
        f'({config.loss.name}, penalty {config.loss.penalty}) at '
        f'{config.dataset.resolution}x{config.dataset.resolution} on '
        f'{mesh.devices.size} {jax.default_backend()} device(s), '
        f'steps {start_step}->{config.num_train_steps}, workdir {workdir}',
        flush=True)

  hooks = []
  if jax.process_index() == 0:
    hooks.append(periodic_actions.ReportProgress(
        num_train_steps=config.num_train_steps, writer=writer,
        every_steps=config.log_every))
    if config.profile_steps:
      hooks.append(periodic_actions.Profile(
          logdir=workdir, num_profile_steps=config.profile_steps,
          first_profile=start_step + 2, every_secs=None))

  evaluator = training_evaluator.TrainingEvaluator(config, program, workdir)
  if config.eval_every:
    evaluator.prepare(start_step)  # fail fast: weights, reference statistics

  step = start_step
  try:
    with _StopRequest() as stop:
      while step < config.num_train_steps:
        local_images = next_local_batch()
        if step == 0:
          writer.write_images(0, {'real_images': monitoring.image_grid(
              local_images[0][:config.num_samples])[None]})
        state, metrics = program.step(
            state, partitioning.make_global_batch(local_images, mesh, batch_axis=1))
        step += 1
        for hook in hooks:
          hook(step)
        if step == start_step + 1:
          # Time the rest without the compilation the first step paid for.
          jax.block_until_ready(state.step)
          print(f'Step {step} done in {time.perf_counter() - started:.1f}s '
                '(includes compilation).', flush=True)
          meter = monitoring.ThroughputMeter(step, images_per_step)
        # Read once: a signal arriving later in this step is handled next step.
        stopping = stop.requested
        last = step == config.num_train_steps
        log = step % config.log_every == 0 or last
        save = checkpointer.should_save(step) or last or stopping
        if log or save:
          # The only host sync: metrics leave the device at log and save steps,
          # and a non-finite state is never written over a good checkpoint.
          scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
          _check_finite(step, scalars)
        if log:
          scalars.update(meter.mark(step))
          scalars.update(monitoring.device_memory())
          writer.write_scalars(step, scalars)
          print(monitoring.progress_line(step, config.num_train_steps, scalars),
                flush=True)
        if step % config.sample_every == 0 or last:
          _write_sample_grids(writer, program.sample, state, sample_z, workdir,
                              step)
        scores = (evaluator(state, step, force=last) if config.eval_every
                  else None)
        if scores is not None:
          writer.write_scalars(step, {f'eval/{k}': v for k, v in scores.items()
                                      if isinstance(v, (int, float))})
          print(f'step {step}  FID {scores.get("fid", float("nan")):.3f}  '
                f'(best {evaluator.best_fid:.3f} at step {evaluator.best_step})',
                flush=True)
        new_best = scores is not None and evaluator.best_step == step
        if save or new_best:
          checkpointer.save(state, _run_metadata(config, step),
                            force=last or stopping or new_best)
        if new_best:
          checkpointer.keep_as_best(step, os.path.join(workdir, 'best'))
        if stopping:
          print(f'Stopped at step {step}; checkpoint saved. Run the same command '
                'to resume.', flush=True)
          break
  finally:
    # Also on errors: an in-flight async save completes, never half-written.
    checkpointer.close()
  writer.flush()
  return state
