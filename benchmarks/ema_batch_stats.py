"""Does the EMA generator need its own batch-norm statistics? A number.

A batch-norm generator in inference mode normalizes with stored running
statistics. The EMA generator's weights are an average over many steps, so
the raw generator's statistics describe different weights. This script
loads a run's checkpoint and compares, on the same latent vectors, the EMA
generator's images in inference mode with

  - `raw`: the raw generator's running statistics (what sampling used before),
  - `averaged`: the statistics averaged with the weights (`ema_batch_stats`,
    what sampling uses now),

against the images it makes with the statistics of its own activations on a
large batch (`train=True`: the exact statistics for these weights). It prints
the RMS pixel difference of each (pixels in [-1, 1]) and one JSON line.

  python benchmarks/ema_batch_stats.py --workdir=workdir/quick [--num=1024]
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from facegan_jax import saved_run  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training run (batch-norm '
                               'generator, e.g. any recipe with the default '
                               'model.g_norm=batch).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default newest).')
_NUM = flags.DEFINE_integer('num', 1024, 'Latent vectors (one batch).')


def rms_differences(generator, state, z) -> dict[str, float]:
  """RMS pixel difference to the exact-statistics images, per choice."""
  exact, _ = generator.apply(
      {'params': state.ema_params, 'batch_stats': state.ema_batch_stats}, z,
      train=True, mutable=['batch_stats'])
  result = {}
  for name, stats in (('raw', state.batch_stats['generator']),
                      ('averaged', state.ema_batch_stats)):
    images = generator.apply({'params': state.ema_params,
                              'batch_stats': stats}, z, train=False)
    result[name] = float(np.sqrt(np.mean(np.square(
        np.asarray(images) - np.asarray(exact)))))
  return result


def main(argv):
  del argv
  config, program, state, meta = saved_run.restore_run(_WORKDIR.value,
                                                       _STEP.value)
  if not jax.tree_util.tree_leaves(state.batch_stats['generator']):
    raise app.UsageError('This run\'s generator has no batch norm '
                         '(model.g_norm=none): nothing to compare.')
  z = jax.random.normal(jax.random.PRNGKey(1),
                        (_NUM.value, config.model.latent_dim))
  result = rms_differences(program.generator, state, z)
  print(f'step {meta["step"]}: RMS pixel difference of the EMA generator\'s '
        f'images to those with its exact statistics: raw running statistics '
        f'{result["raw"]:.4f}, averaged statistics {result["averaged"]:.4f}')
  print(json.dumps(dict(result, step=meta['step'], num=_NUM.value,
                        ema_decay=config.ema_decay)))


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
