"""Orbax checkpoints of the whole train state, with the config beside it.

Each checkpoint `<directory>/<step>/` holds the TrainState (restored straight
into its shardings) and a JSON `meta` item: the config used, the step and the
data position. Orbax writes into a temporary folder and renames it only when
complete, so a run killed mid-save leaves the previous checkpoint as the
newest.

Restoring reads the newest checkpoint's `meta` first, so a caller can refuse
a changed config before any array is read. Only a checkpoint that is damaged
(its meta or arrays cannot be read) is skipped for an older one; when
checkpoints exist but none restores, `CheckpointRestoreError` names each step
and its reason: a run never silently starts over in a workdir that has
checkpoints.
"""

import logging
import sys
from typing import Any, Callable

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from configs import default as default_config
from facegan_jax.train_state import TrainState

# Keys that only change how a run is watched, the statistics its EMA
# generator samples with, or how long it runs: a resumed run may change them
# freely. Any other difference is refused unless
# allow_config_change is set.
RESUME_SAFE_KEYS = frozenset({
    'num_train_steps', 'log_every', 'sample_every', 'num_samples',
    'checkpoint_every', 'keep_checkpoints', 'eval_every', 'eval_num_samples',
    'allow_config_change', 'init_from', 'profile_steps', 'eval_metrics',
    'eval_batch_size', 'eval_reference_images', 'eval_weights',
    'eval_cache_dir', 'nan_rollback_lr_scale', 'max_train_minutes',
    'ema_standing_stats',
})

WEIGHT_FIELDS = ('g_params', 'd_params', 'ema_params', 'batch_stats',
                 'ema_batch_stats')


class ResumeConfigError(ValueError):
  """The config differs from the checkpoint's in keys that shape the run."""


class CheckpointRestoreError(ValueError):
  """Checkpoints exist but none of them can be restored."""


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  return flax.traverse_util.flatten_dict(config, sep='.')


def config_differences(saved: dict[str, Any], current: dict[str, Any],
                       ignore: frozenset[str] = RESUME_SAFE_KEYS) -> list[str]:
  """Keys whose values differ, other than `ignore`, as readable lines."""
  saved_flat, current_flat = flatten_config(saved), flatten_config(current)
  lines = []
  for key in sorted(set(saved_flat) | set(current_flat)):
    if key in ignore:
      continue
    old = saved_flat.get(key, '<absent>')
    new = current_flat.get(key, '<absent>')
    if old != new:
      lines.append(f'{key}: checkpoint {old!r} -> now {new!r}')
  return lines


def config_from_meta(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config stored in a checkpoint's meta, on top of today's defaults.

  Keys added to configs/default.py after the run was saved get their default
  (new keys default to the behaviour from before they existed).
  """
  config = default_config.base_config()
  config.update(saved)
  return config


def check_resume_config(saved_config: dict[str, Any],
                        config: ml_collections.ConfigDict) -> None:
  """Refuses to resume when keys that shape the model or optimizer changed.

  Raises:
    ResumeConfigError: listing every differing key, unless
      config.allow_config_change (then the differences are only logged).
  """
  ignore = RESUME_SAFE_KEYS
  if config.optimizer.schedule == 'cosine':
    # The cosine schedule is stretched over num_train_steps.
    ignore = ignore - {'num_train_steps'}
  differences = config_differences(config_from_meta(saved_config).to_dict(),
                                   config.to_dict(), ignore)
  if differences and not config.allow_config_change:
    raise ResumeConfigError(
        'The config differs from the one this checkpoint was trained with:\n  '
        + '\n  '.join(differences) +
        '\nUse a new --workdir, restore the old values, or pass '
        '--config.allow_config_change=True to resume anyway (only possible '
        'when the model shapes are unchanged).')
  if differences:
    logging.warning('Resuming with a changed config: %s', '; '.join(differences))


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that tell Orbax where each restored array goes."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)


def checkpoints_dir(run_dir: str | epath.Path) -> epath.Path:
  """A run's `checkpoints/` folder, or `run_dir` itself if it holds steps.

  Accepts a workdir, its `checkpoints/` folder or its `best/` folder.
  """
  path = epath.Path(run_dir).expanduser()
  return path / 'checkpoints' if (path / 'checkpoints').is_dir() else path


class Checkpointer:
  """Saves and restores TrainStates in `directory`.

  Args:
    directory: where the step folders go.
    keep: how many checkpoints to keep (the newest, or the best with best_fn).
    checkpoint_every: save interval for `should_save` (Orbax's policy, which
      also says yes once a preemption notice has reached every process).
    read_only: open an existing directory without writing anything.
    best_fn: metrics dict -> value; keeps the `keep` checkpoints with the
      lowest values instead of the newest.
  """

  def __init__(self, directory: str | epath.Path, keep: int = 1,
               checkpoint_every: int | None = None, read_only: bool = False,
               best_fn: Callable[[dict[str, float]], float] | None = None):
    self.directory = epath.Path(directory)
    policies = [checkpoint_managers.PreemptionCheckpointingPolicy()]
    if checkpoint_every:
      policies.append(checkpoint_managers.FixedIntervalPolicy(checkpoint_every))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, read_only=read_only, create=not read_only,
            enable_async_checkpointing=not read_only,
            cleanup_tmp_directories=not read_only,
            best_fn=best_fn, best_mode='min',
            save_decision_policy=checkpoint_managers.AnySavePolicy(policies)))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    # Also on errors: an in-flight async save completes, never half-written.
    self.close()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """At checkpoint_every multiples, and once preemption has been agreed."""
    return self._manager.should_save(step)

  def save(self, state: TrainState, meta: dict[str, Any], force: bool = False,
           metrics: dict[str, float] | None = None) -> bool:
    """Starts an asynchronous save of `state` at its step (all processes)."""
    step = int(state.step)
    if step in self._manager.all_steps():
      return False
    return self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=force)

  def restore_meta(self, step: int) -> dict[str, Any]:
    return self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    return self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state))).state

  def restore(self, target_for: Callable[[dict[str, Any]], Any],
              step: int | None = None) -> tuple[Any, dict[str, Any]] | None:
    """The newest restorable checkpoint (or `step`) as (state, meta).

    Args:
      target_for: meta -> the abstract TrainState to restore into
        (ShapeDtypeStructs with shardings, see `abstract_with_shardings`), or
        None for the saved tree as host arrays. It sees each checkpoint's meta
        before any array is read; what it raises (e.g. ResumeConfigError)
        propagates: only unreadable checkpoints are skipped.
      step: restore exactly this step; None = the newest that restores.

    Returns:
      (state, meta), or None when the directory holds no checkpoint.

    Raises:
      CheckpointRestoreError: checkpoints exist but none (or not `step`)
        can be restored; names each step tried and why.
    """
    steps = self.all_steps()
    if step is not None and step not in steps:
      raise CheckpointRestoreError(
          f'No checkpoint at step {step} in {self.directory}; available '
          f'steps: {", ".join(map(str, steps)) or "none"}.')
    failures = []
    for candidate in [step] if step is not None else reversed(steps):
      try:
        meta = self.restore_meta(candidate)
      except Exception as error:  # pylint: disable=broad-except
        failures.append(self._damaged(candidate, 'meta', error))
        continue
      target = target_for(meta)
      try:
        return self.restore_state(candidate, target), meta
      except Exception as error:  # pylint: disable=broad-except
        failures.append(self._damaged(candidate, 'state', error))
    if not failures:
      return None
    raise CheckpointRestoreError(
        f'{self.directory} holds checkpoints, but none could be restored:\n  '
        + '\n  '.join(failures) +
        '\nNothing was changed. If the model settings differ from the ones '
        'this run was trained with, restore them or use a new --workdir; '
        'move damaged step folders away to start from an older one.')

  def _damaged(self, step: int, item: str, error: Exception) -> str:
    reason = f'step {step}: {item} unreadable ({type(error).__name__}: {error})'
    print(f'WARNING: checkpoint {reason}; trying an older one.',
          file=sys.stderr, flush=True)
    return reason

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def load_weights(run_dir: str) -> dict[str, Any]:
  """Model weights of the newest restorable checkpoint of another run.

  Args:
    run_dir: a run's workdir, its `checkpoints` folder or its `best` folder.

  Returns:
    The WEIGHT_FIELDS of its TrainState, as host arrays.
  """
  path = checkpoints_dir(run_dir)
  if not path.is_dir():
    raise ValueError(f'init_from={run_dir!r} is not a directory; give the '
                     'workdir of a previous run.')
  with Checkpointer(path, read_only=True) as checkpointer:
    restored = checkpointer.restore(lambda meta: None)
  if restored is None:
    raise ValueError(f'init_from={run_dir!r} holds no checkpoint.')
  state, _ = restored
  missing = [key for key in WEIGHT_FIELDS if key not in state]
  if missing:
    raise ValueError(f'init_from={run_dir!r}: its checkpoint lacks '
                     f'{", ".join(missing)} (saved by an older version).')
  return {key: state[key] for key in WEIGHT_FIELDS}
