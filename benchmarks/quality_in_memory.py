r"""FID against training time in one process, without TensorFlow.

  python benchmarks/quality_in_memory.py --config=configs/celeba64.py \
      --images=celeba_10k/ --crop=celeba --minutes=6 --marks=1,2,4,6 \
      --weights=default_1.pt --out=DIR

For a machine with jax but without TensorFlow (main.py cannot run there),
such as a rented GPU: the images are loaded by the dataset tool's own loader
(`input_pipeline.image_files`: the crop and resize of `input_pipeline.prepare`,
so the same pixels), held in memory and fed to the recipe's train step on
every local device, in a shuffled stream with the recipe's random flips. At
each mark of training time the EMA generator is scored (FID, KID,
precision/recall of --num_samples samples against all the images, as
`facegan_jax.evaluate` scores) and one JSON line is printed and appended to
DIR/quality.jsonl; the clock stops while the reference statistics and the
scores are computed, so `minutes` counts launch, loading, compilation and
training alone, as `benchmarks/quality.py` does for main.py. It ends with
the EMA sample grid in DIR. A measuring tool, not a trainer: no
checkpoints, no TensorBoard, one process.
"""

import contextlib
import json
import os
import sys
import time
from concurrent import futures

_LAUNCHED = time.perf_counter()

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.append(_HERE)  # For `quality`; last, so the packages come first.

# pylint: disable=g-import-not-at-top
import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags
from PIL import Image

import quality
from facegan_jax import conditioning
from facegan_jax import metrics
from facegan_jax import monitoring
from facegan_jax import partitioning
from facegan_jax import scoring
from facegan_jax import train_step as train_step_lib
from input_pipeline import crops
from input_pipeline import image_files

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/celeba64.py',
                                'Recipe (recipe[:args]) to train.',
                                lock_config=False)
flags.DEFINE_string('images', None, 'Folder of source images (searched '
                    'recursively, as input_pipeline.prepare does).')
flags.DEFINE_enum('crop', 'celeba', crops.CROPS,
                  'Crop, as input_pipeline.prepare.')
flags.DEFINE_enum('filter', 'lanczos', list(image_files.FILTERS),
                  'Resize filter, as input_pipeline.prepare.')
flags.DEFINE_float('minutes', 5.0, 'Training budget, from launch.')
flags.DEFINE_list('marks', [], 'Minutes of training at which to score '
                  '(default: the end only); the budget is always a mark.')
flags.DEFINE_integer('num_samples', 5000, 'Generated images per score.')
flags.DEFINE_integer('eval_batch_size', 250, 'Images per generator and '
                     'Inception call (capped at --num_samples).')
flags.DEFINE_string('weights', None, 'FID Inception weights file (see '
                    'facegan_jax.metrics.inception_weights); else found as '
                    'facegan_jax.evaluate finds them.')
flags.DEFINE_string('out', None, 'Folder for quality.jsonl and the grid.')
flags.mark_flags_as_required(['images', 'out'])


class TrainingClock:
  """Minutes since launch, less the pauses (reference, scores)."""

  def __init__(self, launched: float):
    self.launched = launched
    self.paused_s = 0.0

  def minutes(self) -> float:
    return (time.perf_counter() - self.launched - self.paused_s) / 60

  @contextlib.contextmanager
  def pause(self):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.paused_s += time.perf_counter() - start


def load_images(folder: str, resolution: int, crop: str, resample: str
                ) -> tuple[np.ndarray, list[str]]:
  """Every usable image of `folder` as uint8 [N, R, R, 3], in path order."""
  if not os.path.isdir(folder):
    raise SystemExit(f'--images={folder}: no such folder.')
  paths = image_files.find_images(folder)[0]
  if not paths:
    raise SystemExit(f'--images={folder}: no images found there.')

  def load(path):
    return image_files.load_image(os.path.join(folder, path), resolution,
                                  crop, resample)[0]
  with futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    loaded = list(pool.map(load, paths))
  kept = [(image, path) for image, path in zip(loaded, paths)
          if image is not None]
  if not kept:
    raise SystemExit(f'--images={folder}: none of its images could be read.')
  return np.stack([image for image, _ in kept]), [path for _, path in kept]


def training_batches(images: np.ndarray, n_critic: int, batch_size: int,
                     random_flip: bool, seed: int):
  """Endless [n_critic, B, R, R, 3] float batches in [-1, 1]: shuffled
  epochs, each image mirrored left-right with probability 1/2 if asked."""
  rng = np.random.default_rng(seed)
  per_step = n_critic * batch_size
  order = np.empty(0, np.int64)
  while True:
    while order.size < per_step:
      order = np.concatenate([order, rng.permutation(len(images))])
    batch, order = images[order[:per_step]], order[per_step:]
    if random_flip:
      mirrored = rng.random(per_step) < 0.5
      batch = np.where(mirrored[:, None, None, None], batch[:, :, ::-1], batch)
    batch = batch.astype(np.float32) / 127.5 - 1.0
    yield batch.reshape((n_critic, batch_size) + batch.shape[1:])


def dataset_description(folder: str, paths: list[str], config) -> dict:
  """What identifies the reference images (the statistics' cache key)."""
  sizes = [os.path.getsize(os.path.join(folder, p)) for p in paths]
  return dict(source='image folder, in memory', path=os.path.abspath(folder),
              num_images=len(paths), crop=FLAGS.crop, filter=FLAGS.filter,
              resolution=config.dataset.resolution,
              files=metrics.dataset_fingerprint(dict(zip(paths, sizes))))


def reference_statistics(extractor, images, description, batch_size):
  def batches():
    return (images[i:i + batch_size]
            for i in range(0, len(images), batch_size))
  return metrics.reference_statistics(
      batches, extractor=extractor,
      fingerprint=metrics.dataset_fingerprint(description),
      num_images=len(images), resolution=description['resolution'],
      resize_method=f'PIL {FLAGS.filter} (input_pipeline.image_files)')


def _check_config(config) -> None:
  if config.dataset.standardize or conditioning.conditioned_attributes(config):
    raise SystemExit('This tool trains unconditional recipes on [-1, 1] '
                     'pixels only (dataset.standardize and '
                     'dataset.attributes off); use main.py for the others.')


def _marks(marks: list[str], budget: float) -> list[float]:
  try:
    minutes = {float(m) for m in marks}
  except ValueError:
    raise SystemExit(f'--marks={",".join(marks)}: give minutes, e.g. '
                     '--marks=1,2.5') from None
  if budget <= 0 or any(m <= 0 for m in minutes):
    raise SystemExit('--minutes and --marks must be positive.')
  return sorted({m for m in minutes if m < budget} | {budget})


def main(argv):
  del argv
  config = FLAGS.config
  _check_config(config)
  os.makedirs(FLAGS.out, exist_ok=True)
  clock = TrainingClock(_LAUNCHED)
  marks = _marks(FLAGS.marks, FLAGS.minutes)
  res = config.dataset.resolution
  images, paths = load_images(FLAGS.images, res, FLAGS.crop, FLAGS.filter)
  print(f'{len(images)} images at {res}x{res} loaded '
        f'({clock.minutes():.2f} min).', flush=True)

  mesh = partitioning.create_mesh()
  extractor = metrics.feature_extractor(mesh, weights_path=FLAGS.weights,
                                        download=False)
  # One batch size for real and generated images: one Inception compilation.
  shards = extractor.num_shards
  eval_batch = -(-min(FLAGS.eval_batch_size, FLAGS.num_samples) // shards
                 ) * shards
  with clock.pause():
    reference = reference_statistics(
        extractor, images, dataset_description(FLAGS.images, paths, config),
        eval_batch)

  program = train_step_lib.build_program(config, mesh)
  state = program.init(jax.random.PRNGKey(config.seed))
  batches = training_batches(images, config.n_critic, config.batch_size,
                             config.dataset.random_flip, config.seed)
  command = ' '.join(['python'] + sys.argv)
  step, previous = 0, None
  with open(os.path.join(FLAGS.out, 'quality.jsonl'), 'a') as results:
    for mark in marks:
      while clock.minutes() < mark:
        state, step_metrics = program.step(state, partitioning.make_global_batch(
            next(batches), mesh, batch_axis=1))
        # One step in flight at most: the clock then times real work.
        jax.block_until_ready(previous)
        previous, step = step_metrics, step + 1
        state = program.after_step(state, step)
      jax.block_until_ready(state)
      minutes = clock.minutes()
      losses = {k: float(v) for k, v in
                jax.device_get(previous or {}).items()}
      with clock.pause():
        scores = scoring.evaluate_state(
            config, program, state, extractor, reference, FLAGS.num_samples,
            ('fid', 'kid', 'pr'), batch_size=eval_batch)
      line = quality.row(
          scores, step, minutes=round(minutes, 2),
          score_seconds=scores['eval_seconds'], losses=losses,
          config=config_flags.get_config_filename(FLAGS['config']),
          seed=config.seed, command=command,
          devices=f'{jax.device_count()} x {jax.devices()[0].device_kind}')
      text = json.dumps(scoring.json_ready(line))
      print(text, flush=True)
      results.write(text + '\n')
      results.flush()

  params, stats = state.generator_variables(True)
  z = jax.random.normal(jax.random.PRNGKey(0), (64, config.model.latent_dim))
  grid = monitoring.image_grid(jax.device_get(program.sample(params, stats, z)))
  Image.fromarray(grid).save(os.path.join(FLAGS.out, 'samples_ema.png'))


if __name__ == '__main__':
  app.run(main)
