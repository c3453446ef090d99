"""Runs a few train steps on fixed batches and saves the parameters.

Used by test_train_step.py in subprocesses, so that the number of CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N) can differ per run:
  python tests/train_step_worker.py OUT.npz
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from facegan_jax import partitioning
from facegan_jax import train_step as train_step_lib
from tests.tiny import tiny_config


def run(num_steps: int = 3) -> dict[str, np.ndarray]:
  config = tiny_config()
  mesh = partitioning.create_mesh()
  program = train_step_lib.build_program(config, mesh)
  state = program.init(jax.random.PRNGKey(0))
  data = np.random.default_rng(0).uniform(
      -1, 1, (num_steps, config.n_critic, config.batch_size, 32, 32, 3)
  ).astype(np.float32)
  for images in data:
    state, _ = program.step(state, partitioning.make_global_batch(images, mesh, 1))
  leaves = jax.tree_util.tree_leaves_with_path(
      {'g': state.g_params, 'd': state.d_params})
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


if __name__ == '__main__':
  params = run()
  np.savez(sys.argv[1], num_devices=len(jax.devices()), **params)
