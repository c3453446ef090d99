"""A saved training run: its config, program and state, for the tools.

`restore_run(workdir)` reads the config saved with a run's checkpoints,
rebuilds its program and restores the newest restorable state; the
command-line evaluator (`python -m facegan_jax.evaluate --workdir=...`)
uses it.
"""

from typing import Any

import ml_collections
from jax.sharding import Mesh

from facegan_jax import checkpointing
from facegan_jax import partitioning
from facegan_jax import train_step as train_step_lib


def restore_run(workdir: str, step: int | None = None,
                mesh: Mesh | None = None
                ) -> tuple[ml_collections.ConfigDict, train_step_lib.Program,
                           Any, dict[str, Any]]:
  """Loads a run's config, program and state from its checkpoints.

  Args:
    workdir: the run's workdir, its `checkpoints` folder or its `best` folder.
    step: the checkpoint to load; None = the newest one that restores.
    mesh: default every device.

  Returns:
    (config, program, state, meta); state is on the program's shardings.

  Raises:
    ValueError: not a directory, or no checkpoints; says what to pass.
    checkpointing.CheckpointRestoreError: none restores, or no `step`
      (lists the steps that exist).
  """
  path = checkpointing.checkpoints_dir(workdir)
  if not path.is_dir():
    raise ValueError(f'{workdir} is not a directory; pass the --workdir of a '
                     'training run (it holds a checkpoints/ folder).')
  mesh = mesh or partitioning.create_mesh()
  built = {}

  def target_for(meta):
    built['config'] = checkpointing.config_from_meta(meta['config'])
    built['program'] = train_step_lib.build_program(built['config'], mesh)
    return checkpointing.abstract_with_shardings(
        built['program'].abstract_state, built['program'].state_sharding)

  with checkpointing.Checkpointer(path, read_only=True) as checkpointer:
    restored = checkpointer.restore(target_for, step=step)
  if restored is None:
    raise ValueError(f'{path} holds no checkpoints; train first (main.py '
                     '--workdir=...) or point at another run.')
  state, meta = restored
  return built['config'], built['program'], state, meta
