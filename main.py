"""Trains a GAN: python main.py --config=configs/wgan_gp.py --workdir=DIR.

Kept short on purpose: all logic lives in facegan_jax.train.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from facegan_jax import host_memory
from facegan_jax import multihost  # Defines --multihost and its flags.

# max_train_minutes counts from here: after the imports above (about a
# second); TensorFlow's import and the compilation fall inside the budget.
LAUNCHED = time.monotonic()
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None,
    'Config file, optionally with arguments: configs/wgan_gp.py:res=32,quick. '
    'Override any key with --config.KEY=VALUE.', lock_config=True)
flags.DEFINE_string('workdir', None,
                    'Directory for checkpoints, samples and TensorBoard logs; '
                    'a run resumes from the checkpoints it finds there.')
flags.adopt_module_key_flags(multihost)  # Listed by --help.
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  # Before any thread allocates: XLA:CPU steps then reuse freed memory
  # instead of faulting it in again each step.
  host_memory.retain_freed_memory()
  if not FLAGS['verbosity'].present:
    # Orbax and TF log every save at INFO; the run prints its own progress.
    logging.set_verbosity(logging.WARNING)
  # TensorFlow only feeds data here: keep it quiet and off the accelerators.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  multihost.join_if_asked()
  from facegan_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir, launched=LAUNCHED)


if __name__ == '__main__':
  app.run(main)
