r"""Input pipeline throughput: images/s per source and resolution.

  python benchmarks/input_pipeline.py [--images=2000] [--batches=40]

Measures, at each resolution (64 and 128 by default):
  - procedural render: the numpy face renderer alone, one thread;
  - procedural: create_dataset(source='procedural'), steady state, plus the
    one-off time to draw this process's faces at startup;
  - prepare: the dataset tool in one process, on a copy of
    ../shared/data/celeba_10k (first --images files; procedural faces saved
    as JPEG when that folder is absent);
  - folder: create_dataset(source='folder') on what it wrote, with the
    default augmentation (random flips), then with 1/8 shifts and 10-degree
    rotations on as well;
  - jpeg decode: tf.data reading the same JPEGs, decode + celeba crop +
    resize (what training straight from JPEG files would cost);
  - train step: images/s the --train_recipe step consumes at that
    resolution (benchmarks/train_step.py), and how many times faster the
    prepared folder feeds it.
Prints a table, then one JSON line.

Unlike the other benchmarks this one needs TensorFlow: tf.data is what it
measures.
"""

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import default
import input_pipeline
from input_pipeline import prepare
from input_pipeline import procedural
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import train_step as train_step_benchmark
from input_pipeline import sources
import tensorflow as tf

CELEBA = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'celeba_10k')


def _config(**overrides):
  config = default.get_config().dataset
  config.random_flip = True
  config.vertical_flip = False
  config.translate = 0.0
  config.rotate = 0.0
  config.standardize = False
  config.diffaugment = ''
  for key, value in overrides.items():
    config[key] = value
  return config


def _images_per_second(dataset, batches: int, batch_size: int) -> float:
  iterator = dataset.as_numpy_iterator()
  next(iterator)  # Startup and the first batch are not throughput.
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def _source_jpegs(folder: str, count: int) -> str:
  """A folder of `count` face JPEGs: CelebA when present, else procedural."""
  os.makedirs(folder)
  if os.path.isdir(CELEBA):
    names = sorted(n for n in os.listdir(CELEBA) if n.endswith('.jpg'))
    for name in names[:count]:
      os.symlink(os.path.join(CELEBA, name), os.path.join(folder, name))
    return f'celeba_10k (first {min(count, len(names))})'
  from PIL import Image
  for index, face in enumerate(procedural.render_faces(range(count), 128)):
    Image.fromarray(face).save(os.path.join(folder, f'{index:06d}.jpg'),
                               quality=90)
  return f'procedural JPEGs ({count}, celeba_10k absent)'


def _jpeg_dataset(folder: str, resolution: int, batch_size: int):
  """tf.data straight from JPEG files: what 'folder' saves us."""
  files = sorted(tf.io.gfile.glob(os.path.join(folder, '*.jpg')))
  dataset = tf.data.Dataset.from_tensor_slices(files).repeat()
  dataset = dataset.map(
      lambda path: sources.decode_and_crop(tf.io.read_file(path), 'celeba',
                                           resolution),
      num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.batch(batch_size, drop_remainder=True).map(
      lambda images: tf.cast(images, tf.float32) / 127.5 - 1).prefetch(
          tf.data.AUTOTUNE)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--images', type=int, default=2000,
                      help='JPEGs to prepare and decode (default %(default)s)')
  parser.add_argument('--batches', type=int, default=40,
                      help='timed batches per row (default %(default)s)')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--resolutions', default='64,128')
  parser.add_argument('--train_recipe', default='wgan_gp',
                      help="recipe in configs/ whose train step is timed "
                           "beside the pipeline ('' skips it)")
  args = parser.parse_args()
  resolutions = [int(r) for r in args.resolutions.split(',')]
  size = args.batch_size
  rows, results = [], {}
  work = tempfile.mkdtemp(prefix='input_pipeline_bench_')
  heavy = dict(translate=1 / 8, rotate=10.0)
  try:
    jpegs = os.path.join(work, 'jpegs')
    origin = _source_jpegs(jpegs, args.images)
    for resolution in resolutions:
      count = {64: 1024, 128: 256}.get(resolution, 128)
      procedural.render_faces(range(8), resolution)
      start = time.perf_counter()
      procedural.render_faces(range(count), resolution)
      rate = count / (time.perf_counter() - start)
      rows.append(('procedural render (1 thread)', resolution, rate, ''))

      config = _config(resolution=resolution, num_images=args.images)
      start = time.perf_counter()
      dataset = input_pipeline.create_dataset(config, local_batch_size=size,
                                              seed=0)
      startup = time.perf_counter() - start
      rate = _images_per_second(dataset, args.batches, size)
      rows.append(('procedural', resolution, rate,
                   f'{args.images} faces drawn at startup in {startup:.1f}s'))

      # One process, so the figure is per core; --workers=K scales it.
      out = os.path.join(work, f'prepared{resolution}')
      start = time.perf_counter()
      manifest = prepare.prepare(jpegs, out, resolution, crop='celeba',
                                 workers=1, progress=False)
      rate = manifest['source']['files'] / (time.perf_counter() - start)
      rows.append(('prepare (1 process)', resolution, rate,
                   f'{origin}; files/s'))
      for name, options in (('folder', {}), ('folder + translate + rotate',
                                             heavy)):
        config = _config(source='folder', path=out, resolution=resolution,
                         **options)
        rate = _images_per_second(input_pipeline.create_dataset(
            config, local_batch_size=size, seed=0), args.batches, size)
        rows.append((name, resolution, rate, origin))
        if name == 'folder':
          folder_rate = rate

      rate = _images_per_second(_jpeg_dataset(jpegs, resolution, size),
                                args.batches, size)
      rows.append(('jpeg decode + crop + resize', resolution, rate,
                   f'{origin}; no flips'))
      if args.train_recipe:
        train_config = importlib.import_module(
            f'configs.{args.train_recipe}').get_config(f'res={resolution}')
        rate = train_step_benchmark.benchmark(train_config, 2)['images_per_s']
        rows.append((f'train step ({args.train_recipe})', resolution, rate,
                     f'prepared folder feeds it {folder_rate / rate:.0f}x '
                     'faster'))
  finally:
    shutil.rmtree(work, ignore_errors=True)

  print(f'\nInput pipeline throughput, batch {size}, {os.cpu_count()} CPUs')
  print(f'{"pipeline":<30} {"res":>4} {"img/s":>9}  note')
  for name, resolution, rate, note in rows:
    print(f'{name:<30} {resolution:>4} {rate:>9.0f}  {note}')
    results[f'{name} @{resolution}'] = round(rate, 1)
  print(json.dumps({'benchmark': 'input_pipeline', 'batch_size': size,
                    'cpus': os.cpu_count(), 'images_per_second': results}))


if __name__ == '__main__':
  main()
