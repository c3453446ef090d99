"""Trains a GAN: python main.py --config=configs/wgan_gp.py --workdir=DIR.

Kept short on purpose: all logic lives in facegan_jax.train.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None,
    'Config file, optionally with arguments: configs/wgan_gp.py:res=32,quick. '
    'Override any key with --config.KEY=VALUE.', lock_config=True)
flags.DEFINE_string('workdir', None,
                    'Directory for checkpoints, samples and TensorBoard logs; '
                    'a run resumes from the checkpoints it finds there.')
flags.DEFINE_bool('multihost', False,
                  'Multi-process run (TPU pod, several GPU hosts): call '
                  'jax.distributed.initialize(), auto-detected on TPU/SLURM or '
                  'from the three flags below.')
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0, for --multihost without '
                    'auto-detection.')
flags.DEFINE_integer('num_processes', None, 'Processes in the run.')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
flags.DEFINE_integer('initialization_timeout_s', 300,
                     'Multi-process: seconds to wait for every process to '
                     'connect to the coordinator before giving up.')
flags.DEFINE_integer('heartbeat_timeout_s', 60,
                     'Multi-process: a process silent for this long is '
                     'declared dead, and the others exit with an error '
                     '(instead of waiting for it forever).')
flags.DEFINE_integer('shutdown_timeout_s', 60,
                     'Multi-process: seconds a finished process waits for '
                     'the others at exit.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS['verbosity'].present:
    # Orbax and TF log every save at INFO; the run prints its own progress.
    logging.set_verbosity(logging.WARNING)
  # TensorFlow only feeds data here: keep it quiet and off the accelerators.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  if FLAGS.multihost:
    from facegan_jax import multihost  # pylint: disable=g-import-not-at-top
    multihost.join(FLAGS.coordinator_address, FLAGS.num_processes,
                   FLAGS.process_id,
                   initialization_timeout_s=FLAGS.initialization_timeout_s,
                   heartbeat_timeout_s=FLAGS.heartbeat_timeout_s,
                   shutdown_timeout_s=FLAGS.shutdown_timeout_s)
  from facegan_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
