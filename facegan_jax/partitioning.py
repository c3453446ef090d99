"""Device mesh, shardings and global batches (jax.jit + NamedSharding).

All devices of all processes form one mesh axis, `data`. Parameters and
optimizer states are replicated; batches are split along their batch axis.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh over `devices` (default: every device of every process).

  jax.make_mesh orders devices by the physical topology (TPU/GPU links).
  Auto axes: shardings are given explicitly to jit, not carried in types.
  """
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding for values every device holds whole (params, scalars)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Sharding that splits axis `batch_axis` across the `data` axis."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh,
                     process_count: int | None = None) -> None:
  """Raises ValueError unless `batch_size` splits evenly over devices and hosts."""
  process_count = jax.process_count() if process_count is None else process_count
  num_devices = mesh.devices.size
  multiple = int(np.lcm(num_devices, process_count))
  if batch_size % multiple:
    suggestion = max(multiple, batch_size // multiple * multiple)
    raise ValueError(
        f'batch_size={batch_size} must be divisible by the number of devices '
        f'({num_devices}) and of processes ({process_count}); try '
        f'--config.batch_size={suggestion}.')


def make_global_batch(local_batch: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
  """Turns each process's slice of the batch into one global jax.Array.

  Args:
    local_batch: pytree of numpy arrays; this process's share of the global
      batch along `batch_axis` (global size = local size * process_count).
    mesh: the device mesh.
    batch_axis: the axis that is split across devices.

  Returns:
    The same pytree of global arrays, sharded along `batch_axis`.
  """
  sharding = batch_sharding(mesh, batch_axis)

  def to_global(x):
    global_shape = list(x.shape)
    global_shape[batch_axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, x,
                                                  tuple(global_shape))

  return jax.tree_util.tree_map(to_global, local_batch)
