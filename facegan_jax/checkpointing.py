"""Orbax checkpoints of the whole train state, with the config beside it.

Each checkpoint `workdir/checkpoints/<step>/` holds the TrainState (restored
straight into its shardings) and a JSON `meta` item: the config used, the
step, and the data position. Orbax writes into a temporary folder and renames
it only when complete, so a run killed mid-save leaves the previous
checkpoint as the newest. A checkpoint that fails to load is reported and
skipped in favour of the one before it.
"""

import logging
import os
import shutil
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from facegan_jax.train_state import TrainState

# Keys that only change how a run is watched or how long it runs: a resumed
# run may change them freely. Any other difference is refused unless
# allow_config_change is set.
RESUME_SAFE_KEYS = frozenset({
    'num_train_steps', 'log_every', 'sample_every', 'num_samples',
    'checkpoint_every', 'keep_checkpoints', 'eval_every', 'eval_num_samples',
    'allow_config_change', 'init_from', 'profile_steps', 'eval_metrics',
    'eval_batch_size', 'eval_reference_images', 'eval_weights',
    'eval_cache_dir', 'nan_rollback_lr_scale',
})


def flatten_config(config: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten_config(value, name + '.'))
    else:
      flat[name] = value
  return flat


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


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that tell Orbax where each restored array goes."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)


class Checkpointer:
  """Saves and restores TrainStates in `directory` (keep the last N)."""

  def __init__(self, directory: str, keep: int = 1, checkpoint_every: int = 1,
               read_only: bool = False):
    self.directory = epath.Path(directory)
    self._checkpoint_every = checkpoint_every
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, read_only=read_only, create=not read_only,
            enable_async_checkpointing=True,
            cleanup_tmp_directories=not read_only))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """True at checkpoint_every multiples and when preemption was signalled."""
    return (step % self._checkpoint_every == 0 or
            self._manager.reached_preemption(step))

  def reached_preemption(self, step: int) -> bool:
    return self._manager.reached_preemption(step)

  def save(self, state: TrainState, meta: dict[str, Any],
           force: bool = False) -> bool:
    """Starts an asynchronous save of `state` at its step."""
    step = int(state.step)
    if step in self._manager.all_steps():
      return False
    return self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(meta)),
        force=force)

  def restore_latest(self, abstract_state: Any | None
                     ) -> tuple[TrainState | dict[str, Any], dict] | None:
    """The newest checkpoint that loads, as (state, meta); None if none.

    Args:
      abstract_state: the TrainState of ShapeDtypeStructs with shardings
        (see `abstract_with_shardings`); None restores the saved tree as
        host arrays in a dict, whatever its shapes.
    """
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                meta=ocp.args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        logging.warning('Checkpoint at step %d in %s cannot be read (%s: %s); '
                        'falling back to the one before it.', step,
                        self.directory, type(error).__name__, error)
        print(f'WARNING: checkpoint step {step} is unreadable '
              f'({type(error).__name__}); trying an older one.', flush=True)
        continue
      return restored.state, restored.meta
    return None

  def keep_as_best(self, step: int, destination: str) -> None:
    """Copies checkpoint `step` to `destination` (replacing the old best).

    A copy outlives the keep-last-N policy; the swap goes through a
    temporary folder so a crash never leaves a half-copied best.
    """
    self._manager.wait_until_finished()
    partial = destination + '.partial'
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(os.fspath(self.directory / str(step)), partial)
    shutil.rmtree(destination, ignore_errors=True)
    os.rename(partial, destination)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def check_resume_config(saved_config: dict[str, Any],
                        config: ml_collections.ConfigDict) -> None:
  """Refuses to resume when keys that shape the model or optimizer changed."""
  ignore = RESUME_SAFE_KEYS
  if config.optimizer.schedule == 'cosine':
    # The cosine schedule is stretched over num_train_steps.
    ignore = ignore - {'num_train_steps'}
  differences = config_differences(saved_config, config.to_dict(), ignore)
  if differences and not config.allow_config_change:
    raise ValueError(
        'The config differs from the one this checkpoint was trained with:\n  '
        + '\n  '.join(differences) +
        '\nUse a new --workdir, restore the old values, or pass '
        '--config.allow_config_change=True to resume anyway.')
  if differences:
    logging.warning('Resuming with a changed config: %s', '; '.join(differences))


def load_weights(run_dir: str) -> dict[str, Any]:
  """Model weights of the newest readable checkpoint of another run.

  Args:
    run_dir: a run's workdir (or its `checkpoints` folder).

  Returns:
    {'g_params', 'd_params', 'ema_params', 'batch_stats'} as host arrays.
  """
  path = epath.Path(run_dir)
  if (path / 'checkpoints').is_dir():
    path = path / 'checkpoints'
  if not path.is_dir():
    raise ValueError(f'init_from={run_dir!r} is not a directory; give the '
                     'workdir of a previous run.')
  restored = Checkpointer(str(path), read_only=True).restore_latest(None)
  if restored is None:
    raise ValueError(f'init_from={run_dir!r} holds no readable checkpoint.')
  state, _ = restored
  return {key: state[key] for key in
          ('g_params', 'd_params', 'ema_params', 'batch_stats')}
