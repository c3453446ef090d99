"""One process doing what a 2-process run does, for tests/test_multiprocess.py.

Reads the two per-process data streams a 2-process run reads (the pipeline
with process_index 0 and 1 of 2), joins each step's halves into the global
batch the two processes assemble, trains on every local device and saves the
parameters. It also saves a digest of every image each stream yielded, so the
test can check that the processes' shares are disjoint.

  python tests/two_process_reference.py OVERRIDES_JSON NUM_STEPS OUT.npz
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import wgan_gp  # pylint: disable=g-import-not-at-top,wrong-import-position
from facegan_jax import partitioning  # pylint: disable=g-import-not-at-top,wrong-import-position
from facegan_jax import train_step as train_step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

PROCESSES = 2


def process_stream(config, process_index):
  """What process `process_index` of PROCESSES reads: [n_critic, B/P, ...]."""
  local_batch_size = config.batch_size // PROCESSES
  dataset = input_pipeline.create_dataset(
      config.dataset, local_batch_size=config.n_critic * local_batch_size,
      seed=config.seed, process_index=process_index,
      process_count=PROCESSES, start_batch=0)
  for batch in dataset.as_numpy_iterator():
    images = batch['image']
    yield images.reshape((config.n_critic, local_batch_size) + images.shape[1:])


def main(overrides_json, num_steps, out):
  config = wgan_gp.get_config('res=32')
  config.update_from_flattened_dict(json.loads(overrides_json))
  mesh = partitioning.create_mesh()
  program = train_step_lib.build_program(config, mesh)
  state = program.init(jax.random.PRNGKey(config.seed))
  streams = [process_stream(config, i) for i in range(PROCESSES)]
  digests = {i: [] for i in range(PROCESSES)}
  for _ in range(int(num_steps)):
    halves = [next(stream) for stream in streams]
    for i, half in enumerate(halves):
      digests[i] += [hashlib.sha1(image.tobytes()).hexdigest()
                     for image in half.reshape((-1,) + half.shape[2:])]
    images = np.concatenate(halves, axis=1)
    state, _ = program.step(
        state, partitioning.make_global_batch(images, mesh, batch_axis=1))
  leaves = jax.tree_util.tree_leaves_with_path(
      {'g_params': state.g_params, 'd_params': state.d_params})
  np.savez(out, num_devices=len(jax.devices()),
           digests_0=np.array(digests[0]), digests_1=np.array(digests[1]),
           **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})


if __name__ == '__main__':
  main(*sys.argv[1:])
