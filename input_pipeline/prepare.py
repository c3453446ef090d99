r"""Dataset tool: turns a folder of images into a prepared dataset.

  python -m input_pipeline.prepare --src=~/celeba/img_align_celeba \
      --out=~/data/celeba64 --resolution=64 --crop=celeba

then train on it with

  python main.py --config=configs/wgan_gp.py --workdir=/tmp/run \
      --config.dataset.source=folder --config.dataset.path=~/data/celeba64

The tool walks --src recursively (JPEG, PNG, WebP, BMP, GIF first frame),
crops and resizes every usable image to R x R RGB with PIL, and writes
TFRecord shards plus manifest.json to --out. Files it cannot use are skipped
and counted by reason, never fatal. Re-running with the same source and
settings finds the manifest's fingerprint unchanged and does nothing.

Records are tf.train.Example protos with 'image' (raw R*R*3 uint8 bytes, row
major RGB), 'index' (int64 position among the written images) and 'path'
(source file relative to --src), and with --labels=FILE 'labels' (int64 0/1
per attribute, in the order of manifest.json's 'attributes'). Raw pixels instead of PNG: reading them is a
memcpy, where PNG decoding would take a CPU core from training, and they are
bit-exact; they cost about 1.3x the disk space of PNG for photos.
"""

import argparse
import collections
import hashlib
import json
import os
import sys
import textwrap
import time
from concurrent import futures
import multiprocessing

import numpy as np

from input_pipeline import crops
from input_pipeline import image_files
from input_pipeline import labels as labels_lib

MANIFEST = 'manifest.json'
FORMAT = 'facegan-prepared-v1'
# Files handed to a worker at a time, and chunks in flight per worker: the
# memory bound of a run, whatever the size of the source folder.
_CHUNK = 16
_IN_FLIGHT_PER_WORKER = 4


def read_manifest(folder: str) -> dict:
  """The manifest of a prepared folder; ValueError saying how to make one."""
  path = os.path.join(os.path.expanduser(folder), MANIFEST)
  if not os.path.isfile(path):
    raise ValueError(
        f'{path} does not exist: {folder!r} is not a prepared dataset. Create '
        f'one from a folder of images with\n  python -m input_pipeline.prepare '
        f'--src=IMAGES_DIR --out={folder} --resolution=64 --crop=celeba')
  with open(path) as stream:
    manifest = json.load(stream)
  if manifest.get('format') != FORMAT:
    raise ValueError(f'{path} has format {manifest.get("format")!r}, not '
                     f'{FORMAT!r}: re-run python -m input_pipeline.prepare.')
  return manifest


def _fingerprint(src: str, paths: list[str], settings: dict) -> str:
  """Hash of the settings and every file's (path, size, mtime)."""
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  for path in paths:
    try:
      status = os.stat(os.path.join(src, path))
      stamp = f'{path}\0{status.st_size}\0{status.st_mtime_ns}\n'
      digest.update(stamp.encode())
    except OSError as error:
      digest.update(f'{path}\0{error.errno}\n'.encode())
  return digest.hexdigest()


def _load_chunk(src: str, paths: list[str], settings: dict) -> list[tuple]:
  """Worker task: load a chunk of files (runs in a pool process)."""
  return [image_files.load_image(
      os.path.join(src, path), settings['resolution'], settings['crop'],
      settings['filter'], settings['min_size'], settings['max_pixels'])
          for path in paths]


def _load_all(src: str, paths: list[str], settings: dict, workers: int):
  """Yields load_image results in the order of `paths`.

  With workers > 1 a process pool decodes while this process writes; only
  a bounded number of chunks is ever in flight, so memory stays flat.
  """
  chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
  if workers <= 1:
    for chunk in chunks:
      yield from _load_chunk(src, chunk, settings)
    return
  # 'spawn': the parent may hold TensorFlow's threads, which fork copies badly.
  context = multiprocessing.get_context('spawn')
  with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    pending = collections.deque()
    for chunk in chunks:
      pending.append(pool.submit(_load_chunk, src, chunk, settings))
      if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
        yield from pending.popleft().result()
    while pending:
      yield from pending.popleft().result()


class _Progress:
  """One status line on stderr, redrawn in place (or a line per 10%)."""

  def __init__(self, total: int, enabled: bool):
    self.total, self.enabled = total, enabled
    self.start = self.last = time.monotonic()
    self.interactive = sys.stderr.isatty()
    self.next_tenth = 1
    self.shown = -1

  def update(self, done: int, written: int, skipped: int, final=False):
    if not self.enabled or (final and done == self.shown and
                            not self.interactive):
      return
    now = time.monotonic()
    if self.interactive and not final and now - self.last < 0.2:
      return
    if not self.interactive and not final and (
        done * 10 < self.next_tenth * self.total):
      return
    self.last, self.shown = now, done
    self.next_tenth = done * 10 // self.total + 1
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / max(rate, 1e-9)
    line = (f'prepare: {done}/{self.total} files, {written} written, '
            f'{skipped} skipped, {rate:.0f} files/s, ETA {eta:.0f}s')
    if self.interactive:
      sys.stderr.write('\r' + line + ('\n' if final else ''))
    else:
      sys.stderr.write(line + '\n')
    sys.stderr.flush()


def _example(image: np.ndarray, index: int, path: str,
             label: np.ndarray | None = None) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = {
      'image': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[image.tobytes()])),
      'index': tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
      'path': tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[path.encode()])),
  }
  if label is not None:
    feature['labels'] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=label.tolist()))
  # Deterministic: protobuf maps otherwise serialize in an order that can
  # differ between processes, and reruns must write identical bytes.
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString(deterministic=True)


def prepare(src: str, out: str, resolution: int, crop: str = 'center',
            resample: str = 'lanczos', workers: int = 1, min_size: int = 0,
            max_pixels: int = 1 << 26, images_per_shard: int = 1024,
            progress: bool = True, labels: str | None = None) -> dict:
  """Writes the prepared dataset; returns its manifest.

  Args:
    src: folder of images (walked recursively).
    out: output folder (created; only its shards and manifest are touched).
    resolution: side R of the written images.
    crop: one of crops.CROPS.
    resample: one of image_files.FILTERS.
    workers: decoding processes (1 = decode in this process).
    min_size: skip images whose crop is smaller than this many pixels
      (0 = upscale them and count a warning).
    max_pixels: skip images with more pixels (decompression bombs).
    images_per_shard: records per TFRecord file.
    progress: draw the progress line on stderr.
    labels: a file of per-image attributes (input_pipeline/labels.py: CelebA's
      list_attr format or a CSV); each written image then carries its 0/1
      vector, and images without a usable row are skipped and counted.

  Returns:
    The manifest (also written to out/manifest.json).

  Raises:
    ValueError: the source folder is missing or holds no image files, a
      setting is invalid, or the labels file is unreadable or names no
      attributes.
  """
  src, out = os.path.abspath(os.path.expanduser(src)), os.path.abspath(
      os.path.expanduser(out))
  if not os.path.isdir(src):
    raise ValueError(f'Source folder {src} does not exist (--src).')
  if crop not in crops.CROPS:
    raise ValueError(
        f'--crop={crop!r}: choose one of {", ".join(crops.CROPS)}.')
  if resample not in image_files.FILTERS:
    raise ValueError(f'--filter={resample!r}: choose one of '
                     f'{", ".join(image_files.FILTERS)}.')
  if resolution < 1 or images_per_shard < 1:
    raise ValueError('--resolution and --images_per_shard must be >= 1.')
  paths, walk_problems, ignored = image_files.find_images(src)
  if not paths:
    raise ValueError(
        f'No image files ({", ".join(image_files.IMAGE_EXTENSIONS)}) under '
        f'{src} ({ignored} other files). Point --src at the folder of images.')
  settings = dict(format=FORMAT, resolution=resolution, crop=crop,
                  filter=resample, min_size=min_size, max_pixels=max_pixels,
                  images_per_shard=images_per_shard)
  table = matched = None
  if labels:
    table = labels_lib.read_labels(os.path.expanduser(labels))
    matched = labels_lib.match(table, paths)
    with open(os.path.expanduser(labels), 'rb') as stream:
      settings['labels_sha256'] = hashlib.sha256(stream.read()).hexdigest()
  fingerprint = _fingerprint(src, paths, settings)
  previous = _previous_manifest(out)
  if previous and previous['source']['fingerprint'] == fingerprint and all(
      _shard_intact(out, shard) for shard in previous['shards']):
    print(f'{out} is up to date with {src} (same files and settings): '
          f'nothing to do.', file=sys.stderr)
    return previous

  os.makedirs(out, exist_ok=True)
  # The manifest goes first and comes back last: an interrupted run leaves
  # no manifest, so the folder is never mistaken for a complete dataset.
  _remove_previous(out, previous)
  unlabelled = matched['unlabelled'] if matched else {}
  manifest = _write_shards(src, out, [p for p in paths if p not in unlabelled],
                           settings, workers, progress,
                           matched['labels'] if matched else None,
                           len(table.names) if table else 0)
  manifest.update(settings)
  if table:
    manifest['attributes'] = list(table.names)
    manifest['attribute_frequencies'] = dict(zip(
        table.names, manifest.pop('label_frequencies')))
    manifest['labels'] = matched['counts']
    manifest['labels_file'] = os.path.abspath(os.path.expanduser(labels))
    walk_problems = walk_problems + list(unlabelled.items())
  manifest['source'] = dict(path=src, files=len(paths), ignored_files=ignored,
                            fingerprint=fingerprint)
  for path, reason in walk_problems:
    manifest['skipped'][reason] = manifest['skipped'].get(reason, 0) + 1
    manifest['skipped_files'].append([path, reason])
  manifest['skipped_files'].sort()
  manifest['skipped'] = dict(sorted(manifest['skipped'].items()))
  temporary = os.path.join(out, MANIFEST + '.tmp')
  with open(temporary, 'w') as stream:
    json.dump(manifest, stream, indent=1, sort_keys=True)
  os.replace(temporary, os.path.join(out, MANIFEST))
  return manifest


def _previous_manifest(out: str) -> dict | None:
  try:
    return read_manifest(out)
  except (ValueError, OSError, json.JSONDecodeError):
    return None


def _shard_intact(out: str, shard: dict) -> bool:
  path = os.path.join(out, shard['file'])
  return os.path.isfile(path) and os.path.getsize(path) == shard['bytes']


def _remove_previous(out: str, previous: dict | None) -> None:
  if os.path.exists(os.path.join(out, MANIFEST)):
    os.remove(os.path.join(out, MANIFEST))
  for shard in (previous or {}).get('shards', []):
    path = os.path.join(out, shard['file'])
    if os.path.isfile(path):
      os.remove(path)


def _write_shards(src: str, out: str, paths: list[str], settings: dict,
                  workers: int, progress: bool,
                  labels: dict[str, np.ndarray] | None = None,
                  num_attributes: int = 0) -> dict:
  """Decodes every file and writes the shards; returns the counts.

  With `labels` ({path: 0/1 vector of num_attributes} for every path), each
  record carries its vector and the counts include 'label_frequencies' over
  the written images.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  skipped, skipped_files = collections.Counter(), []
  upscaled, modes = [], collections.Counter()
  shards, writer = [], None
  # Per-channel histograms: exact statistics for a few microseconds a record.
  histogram = np.zeros(3 * 256, np.int64)
  channel_offsets = np.array([0, 256, 512], np.uint16)
  meter = _Progress(len(paths), progress)
  written = 0
  label_sums = np.zeros(num_attributes, np.float64)
  results = _load_all(src, paths, settings, workers)
  for done, (path, (image, note, mode)) in enumerate(zip(paths, results), 1):
    if mode:
      modes[mode] += 1
    if image is None:
      skipped[note] += 1
      skipped_files.append([path, note])
    else:
      if note == image_files.UPSCALED:
        upscaled.append(path)
      if written % settings['images_per_shard'] == 0:
        if writer:
          writer.close()
        shards.append(dict(file=f'data-{len(shards):05d}.tfrecord', count=0))
        writer = tf.io.TFRecordWriter(os.path.join(out, shards[-1]['file']))
      label = labels[path] if labels is not None else None
      writer.write(_example(image, written, path, label))
      if label is not None:
        label_sums = label_sums + label
      shards[-1]['count'] += 1
      histogram += np.bincount((image.reshape(-1, 3) + channel_offsets).ravel(),
                               minlength=3 * 256)
      written += 1
    meter.update(done, written, len(skipped_files))
  if writer:
    writer.close()
  meter.update(len(paths), written, len(skipped_files), final=True)
  for shard in shards:
    shard['bytes'] = os.path.getsize(os.path.join(out, shard['file']))
  histogram = histogram.reshape(3, 256)
  values = np.arange(256) / 255
  count = max(written * settings['resolution']**2, 1)
  mean = histogram @ values / count
  std = np.sqrt(np.maximum(histogram @ values**2 / count - mean * mean, 0))
  extra = {}
  if labels is not None:
    extra['label_frequencies'] = (label_sums / max(written, 1)).round(
        6).tolist()
  return dict(extra, written=written, skipped=dict(skipped),
              skipped_files=skipped_files, upscaled=len(upscaled),
              upscaled_files=upscaled, source_modes=dict(sorted(modes.items())),
              shards=shards, channel_mean=mean.round(6).tolist(),
              channel_std=std.round(6).tolist())


def _parser() -> argparse.ArgumentParser:
  # The models own the resolutions training accepts. Imported here, not at
  # the top: the spawned workers re-import this module and need no jax.
  from facegan_jax import models  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog='python -m input_pipeline.prepare',
      description=__doc__.split('\n\n')[0].strip() + (
          ' Example:\n  python -m input_pipeline.prepare --src=IMAGES_DIR '
          '--out=OUT_DIR --resolution=64 --crop=celeba\nthen train with '
          '--config.dataset.source=folder --config.dataset.path=OUT_DIR.'),
      epilog=textwrap.fill(
          'Writes data-NNNNN.tfrecord shards and manifest.json (counts, skip '
          'reasons, every skipped file, settings, source fingerprint) to '
          '--out. Unusable files (corrupt, empty, not images, too large, '
          'unreadable, symlink loops) are skipped and listed, never fatal. '
          'Re-running with unchanged files and settings does nothing. Exit '
          'status: 0 when at least one image was written, 1 when none was, '
          '2 for a missing or empty --src.', 79),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--src', required=True,
                      help='folder of images, searched recursively')
  parser.add_argument('--out', required=True,
                      help='output folder for the shards and manifest.json')
  parser.add_argument('--resolution', type=int, required=True,
                      help='side of the square output images, e.g. 64 '
                           '(training needs one of '
                           f'{", ".join(map(str, models.RESOLUTIONS))})')
  parser.add_argument('--crop', default='center', choices=crops.CROPS,
                      help="'center': largest centred square; 'celeba': the "
                           'aligned-CelebA face crop (140x140 of 178x218, '
                           "scaled to the image); 'none': squash the whole "
                           'image (default: %(default)s)')
  parser.add_argument('--filter', default='lanczos',
                      choices=tuple(image_files.FILTERS),
                      help='PIL resampling filter (default: %(default)s)')
  parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                      help='decoding processes (default: all %(default)s '
                           'CPUs; 1 decodes in the main process)')
  parser.add_argument('--min_size', type=int, default=0,
                      help='skip images whose crop is smaller than this many '
                           'pixels; 0 upscales them and counts a warning '
                           '(default: %(default)s)')
  parser.add_argument('--max_pixels', type=int, default=1 << 26,
                      help='skip images with more pixels than this, before '
                           'decoding them (default: %(default)s)')
  parser.add_argument('--images_per_shard', type=int, default=1024,
                      help='images per TFRecord file (default: %(default)s)')
  parser.add_argument('--labels', default=None,
                      help='per-image binary attributes: CelebA\'s '
                           'list_attr_celeba.txt format or a CSV '
                           '(filename,attr1,...; 0/1 or -1/1), matched to the '
                           'images by path relative to --src; images without '
                           'a usable row are skipped and counted')
  parser.add_argument('--quiet', action='store_true',
                      help='no progress line')
  return parser


def main(argv: list[str] | None = None) -> int:
  """Command-line entry point; returns the exit code."""
  args = _parser().parse_args(argv)
  # TensorFlow's start-up chatter would bury the progress line.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  try:
    manifest = prepare(args.src, args.out, args.resolution, args.crop,
                       args.filter, args.workers, args.min_size,
                       args.max_pixels, args.images_per_shard,
                       progress=not args.quiet, labels=args.labels)
  except ValueError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(_summary(manifest, args.out))
  return 0 if manifest['written'] else 1


def _summary(manifest: dict, out: str) -> str:
  lines = [f'{out}: {manifest["written"]} images '
           f'({manifest["resolution"]}x{manifest["resolution"]}, crop '
           f'{manifest["crop"]}) in {len(manifest["shards"])} shards.']
  if manifest['skipped']:
    reasons = ', '.join(f'{n} {r}' for r, n in manifest['skipped'].items())
    lines.append(f'Skipped {len(manifest["skipped_files"])} files: {reasons} '
                 f'(each listed in {MANIFEST}, skipped_files).')
  if 'labels' in manifest:
    counts = manifest['labels']
    lines.append(
        f'Labels: {len(manifest["attributes"])} attributes; '
        f'{counts["matched"]} rows matched, {counts["images_without_labels"]} '
        f'images without a row, {counts["malformed_rows"]} malformed rows, '
        f'{counts["labels_without_images"]} rows without an image.')
  if manifest['upscaled']:
    lines.append(f'Warning: {manifest["upscaled"]} images were smaller than '
                 f'the crop and were upscaled (use --min_size to skip them).')
  if not manifest['written']:
    lines.append('No usable image: nothing to train on.')
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())
