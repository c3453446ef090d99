"""Loading a finished (or running) training run for evaluation.

`restore_run(workdir)` reads the config saved with a run's checkpoints,
rebuilds its program and restores the newest readable state; the
command-line evaluator (`python -m facegan_jax.evaluate --workdir=...`)
uses it.
"""

import sys
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh

from configs import default as default_config
from facegan_jax import checkpointing
from facegan_jax import partitioning
from facegan_jax import train_step as train_step_lib


def config_from_meta(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config stored in a checkpoint's meta, on top of today's defaults.

  Keys added to configs/default.py after the run was saved get their default.
  """
  config = default_config.base_config()
  config.update(saved)
  return config


def restore_run(workdir: str, step: int | None = None,
                mesh: Mesh | None = None
                ) -> tuple[ml_collections.ConfigDict, train_step_lib.Program,
                           Any, dict[str, Any]]:
  """Loads a run's config, program and state from its checkpoints.

  Args:
    workdir: the run's workdir (or its `checkpoints` folder).
    step: the checkpoint to load; None = the newest one that loads.
    mesh: default every device.

  Returns:
    (config, program, state, meta); state is on the program's shardings.

  Raises:
    ValueError: no checkpoints, or none at `step`; says what exists.
  """
  path = epath.Path(workdir).expanduser()
  if (path / 'checkpoints').is_dir():
    path = path / 'checkpoints'
  if not path.is_dir():
    raise ValueError(f'{workdir} is not a directory; pass the --workdir of a '
                     'training run (it holds a checkpoints/ folder).')
  manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
      read_only=True, create=False))
  steps = sorted(manager.all_steps())
  if not steps:
    raise ValueError(f'{path} holds no checkpoints; train first (main.py '
                     '--workdir=...) or point at another run.')
  if step is not None and step not in steps:
    raise ValueError(f'No checkpoint at step {step} in {path}; available '
                     f'steps: {", ".join(map(str, steps))}.')
  mesh = mesh or partitioning.create_mesh()
  errors = []
  for candidate in [step] if step is not None else reversed(steps):
    try:
      meta = manager.restore(candidate, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore())).meta
      config = config_from_meta(meta['config'])
      program = train_step_lib.build_program(config, mesh)
      abstract = checkpointing.abstract_with_shardings(
          program.abstract_state, program.state_sharding)
      state = manager.restore(candidate, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract))).state
      return config, program, state, meta
    except Exception as error:  # pylint: disable=broad-except
      errors.append(f'step {candidate}: {type(error).__name__}: {error}')
      print(f'WARNING: checkpoint step {candidate} in {path} cannot be read '
            f'({type(error).__name__}).', file=sys.stderr)
  raise ValueError(f'No readable checkpoint in {path}:\n  ' +
                   '\n  '.join(errors))
