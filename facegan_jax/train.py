"""The training loop: `train_and_evaluate(config, workdir)`.

Creates the mesh, the sharded state (restored from the newest checkpoint in
`workdir` when there is one), the input pipeline positioned where the state
stopped, and runs the jitted step, reporting, sampling and checkpointing.
"""

import os
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from clu import metric_writers
from etils import epath

import input_pipeline
from facegan_jax import checkpointing
from facegan_jax import conditioning
from facegan_jax import metric_summary
from facegan_jax import monitoring
from facegan_jax import optimizers
from facegan_jax import partitioning
from facegan_jax import periodic_evaluation
from facegan_jax import stopping
from facegan_jax import train_step as train_step_lib
from facegan_jax.config_validation import validate_config

# The fixed latent vectors for sample grids come from this stream, apart from
# the training randomness, so grids are comparable across runs and resumes.
_SAMPLE_SEED_OFFSET = 1_000_003
# Likewise for the latents of the standing statistics (ema_standing_stats).
_STANDING_SEED_OFFSET = 2_000_003

# Attributes the off/on grid of a conditional run shows (the first ones).
_GRID_ATTRIBUTES = 10

# Rollbacks after non-finite losses before giving up (nan_rollback_lr_scale).
_MAX_ROLLBACKS = 3


class NonFiniteLossError(FloatingPointError):
  """A loss or metric became NaN or Inf."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       launched: float | None = None) -> Any:
  """Trains until `config.num_train_steps`; returns the final TrainState.

  With `config.max_train_minutes`, the run also stops (checkpoint, sample
  grids, return) once that much wall-clock time has passed since `launched`
  (a time.monotonic() value; main.py passes its start; None = now).

  With `nan_rollback_lr_scale` in (0, 1), a non-finite loss does not end the
  run: it resumes from the last checkpoint (never a non-finite one; from
  scratch if none was written yet) with both learning rates scaled, up to
  _MAX_ROLLBACKS times.
  """
  deadline = None
  if config.max_train_minutes:
    launched = time.monotonic() if launched is None else launched
    deadline = launched + 60 * config.max_train_minutes
  for rollback in range(_MAX_ROLLBACKS + 1):
    try:
      return _train(config, workdir, deadline)
    except NonFiniteLossError as error:
      scale = config.nan_rollback_lr_scale
      if not 0 < scale < 1 or rollback == _MAX_ROLLBACKS:
        raise
      with checkpointing.Checkpointer(epath.Path(workdir) / 'checkpoints',
                                      read_only=True) as checkpointer:
        steps = checkpointer.all_steps()
      where = (f'the checkpoint at step {steps[-1]}' if steps else
               'scratch (no checkpoint was written before it)')
      print(f'{error}\nRestarting from {where} with learning rates '
            f'x{scale}.', flush=True)
      config = ml_collections.ConfigDict(config.to_dict())
      config.optimizer.g_learning_rate *= scale
      config.optimizer.d_learning_rate *= scale
      config.allow_config_change = True


def _train(config: ml_collections.ConfigDict, workdir: str,
           deadline: float | None) -> Any:
  """One attempt of `train_and_evaluate`."""
  validate_config(config)
  input_pipeline.validate_dataset_config(config.dataset)
  config = _with_resolved_attributes(config)
  # epath: a workdir on a bucket (gs://...) works like a local folder.
  workdir = epath.Path(workdir).expanduser()
  if not workdir.is_absolute():  # Local and relative (a bucket is absolute).
    workdir = workdir.resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = partitioning.create_mesh()
  partitioning.check_batch_size(config.batch_size, mesh)
  program = train_step_lib.build_program(config, mesh)

  with checkpointing.Checkpointer(
      workdir / 'checkpoints', keep=config.keep_checkpoints,
      checkpoint_every=config.checkpoint_every) as checkpointer:
    state = _restore_or_init(config, program, checkpointer, workdir)
    if program.attributes and jax.process_index() == 0:
      conditioning.save_label_bank(
          workdir, program.attributes,
          input_pipeline.all_labels(config.dataset))
    print(f'Training {config.model.generator}/{config.model.discriminator} '
          f'({config.loss.name}, penalty {config.loss.penalty}) at '
          f'{config.dataset.resolution}x{config.dataset.resolution} on '
          f'{mesh.devices.size} {jax.default_backend()} device(s), '
          f'steps {int(state.step)}->{config.num_train_steps}, workdir '
          f'{workdir}', flush=True)
    loop = _Loop(config, program, mesh, checkpointer, workdir)
    return loop.run(state, deadline)


def _with_resolved_attributes(config):
  """`config` with dataset.attributes as the names it resolves to ('all'
  expanded), so the checkpoint says exactly what the models condition on."""
  names = input_pipeline.resolve_attributes(config.dataset)
  if ','.join(names) == config.dataset.attributes:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.dataset.attributes = ','.join(names)
  return config


def _restore_or_init(config, program, checkpointer, workdir):
  """The newest checkpoint's state if `workdir` has one, else a fresh state.

  The config check runs on the checkpoint's meta before any array is read,
  so a changed model is refused with its keys instead of failing to load.
  """
  abstract = checkpointing.abstract_with_shardings(program.abstract_state,
                                                   program.state_sharding)

  def checked_target(meta):
    checkpointing.check_resume_config(meta['config'], config)
    return abstract

  restored = checkpointer.restore(checked_target)
  if restored is not None:
    state, meta = restored
    print(f'Resuming from step {int(state.step)} in {workdir}.', flush=True)
    saved_count = meta.get('process_count', 1)
    if saved_count != jax.process_count():
      print(f'WARNING: this run was saved by {saved_count} process(es) and '
            f'resumes with {jax.process_count()}: each process now reads a '
            'different shard of the data, so the data order from here on '
            'differs from an uninterrupted run (training is otherwise '
            'unchanged).', flush=True)
    return state
  state = program.init(jax.random.PRNGKey(config.seed))
  if config.init_from:
    state = _with_weights_from(state, config.init_from, program.state_sharding)
    print(f'Initialized weights from {config.init_from}.', flush=True)
  return state


def _with_weights_from(state, run_dir: str, state_sharding):
  """`state` with the models' weights of another run's newest checkpoint.

  Optimizer states, step and rng stay fresh: this starts a new run.
  """
  weights = checkpointing.load_weights(run_dir)
  # Only the models' own entries: LeCam's score averages start fresh.
  weights['batch_stats'] = {**state.batch_stats, **{
      key: weights['batch_stats'][key] for key in ('generator',
                                                   'discriminator')}}
  for name, tree in weights.items():
    expected = jax.tree_util.tree_map(np.shape, getattr(state, name))
    if jax.tree_util.tree_map(np.shape, tree) != expected:
      raise ValueError(
          f'init_from={run_dir!r}: its {name} do not match the models of this '
          'config; use the same model.* and dataset.resolution settings.')
  state = state.replace(**weights)
  state = state.replace(  # Lookahead pulls back to these, not to the init.
      g_opt_state=optimizers.lookahead_restarted_at(state.g_opt_state,
                                                    state.g_params),
      d_opt_state=optimizers.lookahead_restarted_at(state.d_opt_state,
                                                    state.d_params))
  return jax.device_put(state, state_sharding)


def _local_batches(config, start_step: int
                   ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
  """This process's real images per step, [n_critic, B_local, H, W, C], and
  their labels [n_critic, B_local, A] (None for an unconditional run).

  The stream is a pure function of (seed, process count, position), so it
  resumes exactly where `start_step` left it.
  """
  local_batch_size = config.batch_size // jax.process_count()
  dataset = input_pipeline.create_dataset(
      config.dataset, local_batch_size=config.n_critic * local_batch_size,
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), start_batch=start_step)
  for batch in dataset.as_numpy_iterator():
    per_update = lambda x: x.reshape((config.n_critic, local_batch_size) +
                                     x.shape[1:])
    labels = batch.get('labels')
    yield (per_update(batch['image']),
           None if labels is None else per_update(labels))


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
      # Each process reads its own shard: the position means this count.
      'process_count': jax.process_count(),
  }


def _non_finite_error(step: int, means: dict[str, float]) -> NonFiniteLossError:
  bad = sorted(k for k, v in means.items() if not np.isfinite(v))
  return NonFiniteLossError(
      f'Non-finite values at step {step}: '
      + ', '.join(f'{k}={means[k]}' for k in bad) +
      '. The last checkpoint in the workdir is from before this; lower the '
      'learning rates (optimizer.g_learning_rate / d_learning_rate) or '
      'enable optimizer.grad_clip_norm and resume (or set '
      'nan_rollback_lr_scale to do so automatically).')


class _Loop:
  """The body of a run: step, report, sample, evaluate, save, stop.

  Every process runs it alike; process 0 alone writes TensorBoard events and
  PNGs, and all take part in checkpoint saves and evaluations.
  """

  def __init__(self, config, program, mesh, checkpointer, workdir):
    self.config = config
    self.program = program
    self.mesh = mesh
    self.checkpointer = checkpointer
    self.workdir = workdir
    self.writer = metric_writers.create_default_writer(
        os.fspath(workdir), just_logging=jax.process_index() > 0)
    self.meter = monitoring.ThroughputMeter(config.n_critic * config.batch_size)
    self.evaluator = periodic_evaluation.PeriodicEvaluator(
        config, program, os.fspath(workdir))
    self.summary = None  # metric_summary.MetricSummary since the last log.
    self.deadline = None  # time.monotonic() at which the budget ends, if any.
    # A global array, like every value the jitted functions take.
    self.sample_z = jax.device_put(
        np.asarray(jax.random.normal(
            jax.random.PRNGKey(config.seed + _SAMPLE_SEED_OFFSET),
            (config.num_samples, config.model.latent_dim))),
        partitioning.replicated(mesh))
    self.sample_labels = None  # Labels of a conditional run's grids.
    self.label_bank = None  # Its real label vectors, for standing statistics.
    self.standing_key = jax.device_put(
        jax.random.PRNGKey(config.seed + _STANDING_SEED_OFFSET),
        partitioning.replicated(mesh))
    if program.attributes:
      bank = input_pipeline.all_labels(config.dataset)
      self.sample_labels = jax.device_put(
          conditioning.draw_labels(bank, config.seed + _SAMPLE_SEED_OFFSET,
                                   config.num_samples),
          partitioning.replicated(mesh))
      if program.standing_stats is not None:
        self.label_bank = jax.device_put(bank.astype(np.float32),
                                         partitioning.replicated(mesh))

  def run(self, state, deadline: float | None = None):
    config = self.config
    start_step = step = int(state.step)
    if start_step == 0:
      self.writer.write_hparams(
          checkpointing.flatten_config(config.to_dict()))
    if config.eval_every:
      self.evaluator.prepare(start_step)  # Fail fast: weights, reference.
    profile = None
    if config.profile_steps and jax.process_index() == 0:
      profile = monitoring.ProfileWindow(os.fspath(self.workdir),
                                         start_step + 2,
                                         config.profile_steps)
    started = time.perf_counter()
    self.deadline = deadline
    batches = _local_batches(config, start_step)
    try:
      with stopping.StopRequest(jax.process_count() > 1, deadline,
                                config.log_every) as stop:
        while step < config.num_train_steps:
          local_images, local_labels = next(batches)
          if step == 0:
            self.writer.write_images(0, {'real_images': monitoring.image_grid(
                local_images[0][:config.num_samples])[None]})
          batch = (local_images if local_labels is None else
                   (local_images, local_labels))
          state, metrics = self.program.step(
              state, partitioning.make_global_batch(batch, self.mesh,
                                                    batch_axis=1))
          self.summary = metric_summary.accumulate(self.summary, metrics,
                                                   state.step)
          step += 1
          state = self.program.after_step(state, step)
          if profile:
            profile(step, state)
          if step == start_step + 1:
            # Time the rest without the compilation the first step paid for.
            jax.block_until_ready(state.step)
            print(f'Step {step} done in {time.perf_counter() - started:.1f}s '
                  '(includes compilation).', flush=True)
            self.meter.start(step)
          # Asked once per step: a signal arriving later counts for the next.
          stop_now = stop.reached(step)
          state = self._after_step(state, step, stop_now)
          if stop_now:
            reason = (f'The time budget (max_train_minutes='
                      f'{config.max_train_minutes:g}) is spent: stopped'
                      if stop.out_of_time else 'Stopped')
            print(f'{reason} at step {step}; checkpoint saved. Run the same '
                  'command to resume.', flush=True)
            break
    finally:
      if profile:
        profile.close()
      self.evaluator.close()
    self.writer.flush()
    return state

  def _after_step(self, state, step: int, stop_now: bool):
    """Reports, samples, evaluates and saves as due at `step`; returns the
    state, with standing statistics if they were recomputed."""
    config = self.config
    last = step == config.num_train_steps
    log = step % config.log_every == 0 or last
    save = self.checkpointer.should_save(step) or last or stop_now
    grids = step % config.sample_every == 0 or last or stop_now
    evaluate = config.eval_every and (self.evaluator.due(step) or last)
    if self.program.standing_stats is not None and (save or grids or evaluate):
      # Whatever shows or keeps the EMA generator gets its own statistics;
      # recomputed from scratch, so a resume changes none of them.
      state = state.replace(ema_batch_stats=self.program.standing_stats(
          state.ema_params, state.ema_batch_stats, self.standing_key,
          self.label_bank))
    if log or save:
      # Metrics leave the device only here, and a non-finite state is never
      # written over a good checkpoint.
      means, bad_step = metric_summary.read(self.summary)
      if bad_step is not None:
        raise _non_finite_error(bad_step, means)
    if log:
      self._report(step, means)
    if grids:
      self._write_sample_grids(state, step)
    scores = self.evaluator(state, step, force=last) if evaluate else None
    if save:
      self.checkpointer.save(state, _run_metadata(config, step),
                             force=last or stop_now)
    if scores is not None:
      self._report_scores(state, step, scores)
    return state

  def _report(self, step: int, means: dict[str, float]) -> None:
    """Writes the interval's mean metrics, speed and memory; resets the sums."""
    scalars = dict(means)
    self.summary = None
    scalars.update(self.meter.mark(step))
    scalars.update(monitoring.device_memory())
    self.writer.write_scalars(step, scalars)
    seconds_left = None if self.deadline is None else (
        self.deadline - time.monotonic())
    print(monitoring.progress_line(step, self.config.num_train_steps, scalars,
                                   seconds_left), flush=True)

  def _write_sample_grids(self, state, step: int) -> None:
    """Raw and EMA grids of the fixed latents; a conditional run adds one
    showing each attribute off and on for the same latents (EMA)."""
    grids = {}
    for name, use_ema in (('samples', False), ('samples_ema', True)):
      params, stats = state.generator_variables(use_ema)
      images = jax.device_get(self.program.sample(
          params, stats, self.sample_z, 1.0, self.sample_labels))
      grids[name] = monitoring.image_grid(images)
    files = {'samples_ema': 'ema', 'samples': 'raw'}
    if self.program.attributes:
      grids['attributes_ema'] = self._attribute_grid(state)
      files['attributes_ema'] = 'attributes_ema'
    if jax.process_index() == 0:
      for name, prefix in files.items():
        monitoring.save_png(
            grids[name], self.workdir / 'samples' / f'{prefix}_{step:07d}.png')
    self.writer.write_images(step, {k: v[None] for k, v in grids.items()})

  def _attribute_grid(self, state) -> np.ndarray:
    """Row pairs: attribute a off, then on; the other attributes as drawn
    for each latent. At most _GRID_ATTRIBUTES attributes, 8 latents."""
    count = min(8, self.config.num_samples)
    base = np.asarray(self.sample_labels)[:count]
    labels = conditioning.toggle_grid_labels(base[:, :_GRID_ATTRIBUTES])
    if base.shape[1] > _GRID_ATTRIBUTES:  # The rest as drawn.
      rest = np.tile(base[:, _GRID_ATTRIBUTES:], (len(labels) // count, 1))
      labels = np.concatenate([labels, rest], axis=1)
    z = np.tile(np.asarray(self.sample_z)[:count], (len(labels) // count, 1))
    z, labels = jax.device_put((z, labels), partitioning.replicated(self.mesh))
    params, stats = state.generator_variables(True)
    images = jax.device_get(self.program.sample(params, stats, z, 1.0, labels))
    return monitoring.image_grid(images, cols=count)

  def _report_scores(self, state, step: int, scores: dict[str, float]) -> None:
    """TensorBoard eval/*, a console line, and the best checkpoint."""
    evaluator = self.evaluator
    self.writer.write_scalars(step, {f'eval/{k}': v for k, v in scores.items()
                                     if isinstance(v, (int, float))})
    print(f'step {step}  FID {scores.get("fid", float("nan")):.3f}  '
          f'(best {evaluator.best_fid:.3f} at step {evaluator.best_step})',
          flush=True)
    if evaluator.best_step == step:
      evaluator.keep_best(state, _run_metadata(self.config, step))
