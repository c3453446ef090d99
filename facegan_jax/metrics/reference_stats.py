"""Reference statistics of a real dataset: computed once, cached, provenance.

A FID is only comparable to another FID computed from the same reference
images, the same preprocessing and the same network weights. The cache key
is therefore a hash of all of these: the dataset fingerprint (the caller's
description of the data: source, name, split, crop, ...), the number of
images, their resolution, the resize method that brought them to it, the
Inception input size and resize, and the weights' sha256. Files:
`<cache>/reference_stats/<key>.npz` (mu, sigma, features, logits) and
`<key>.json` (every field of the key, the actual image count, the npz's
sha256, the creation time).
"""

from collections.abc import Callable, Iterable, Mapping
import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from facegan_jax.metrics import features as features_lib
from facegan_jax.metrics import fid
from facegan_jax.metrics import inception_weights

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ReferenceStatistics:
  """Features of real images and their Gaussian statistics.

  Attributes:
    mu: [2048] float64 mean of pool3 features.
    sigma: [2048, 2048] float64 covariance.
    features: [N, 2048] float32 pool3 features (KID, precision/recall).
    logits: [N, 1008] float32, or None without a classifier.
    info: provenance (json-serializable), as in the sidecar file.
  """

  mu: np.ndarray
  sigma: np.ndarray
  features: np.ndarray
  logits: np.ndarray | None
  info: dict[str, Any]


def dataset_fingerprint(description: Mapping[str, Any]) -> str:
  """sha256 of a json description of a dataset (sorted keys).

  Args:
    description: what identifies the images, e.g. {'source': 'folder',
      'path': ..., 'files': N, 'crop': 'celeba'}; any json-able values.
  """
  text = json.dumps(dict(description), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def cache_key(fields: Mapping[str, Any]) -> str:
  """The hash naming a statistics file, from the fields that define it."""
  return dataset_fingerprint(fields)[:32]


def _key_fields(extractor_provenance: Mapping[str, Any], fingerprint: str,
                num_images: int, resolution: int,
                resize_method: str) -> dict[str, Any]:
  return {
      'format_version': FORMAT_VERSION,
      'dataset_fingerprint': fingerprint,
      'num_images_requested': int(num_images),
      'resolution': int(resolution),
      'resize_method': resize_method,
      'inception_input_size': extractor_provenance['inception_input_size'],
      'inception_resize_method': extractor_provenance['resize_method'],
      'weights_sha256': extractor_provenance['weights_sha256'],
  }


def save_reference_statistics(path: str | os.PathLike,
                              stats: ReferenceStatistics) -> dict[str, Any]:
  """Writes `path` (.npz) and its .json sidecar atomically.

  Returns:
    The info written to the sidecar (`stats.info` plus the npz sha256).
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = dict(mu=stats.mu, sigma=stats.sigma, features=stats.features)
  if stats.logits is not None:
    arrays['logits'] = stats.logits
  fd, tmp_name = tempfile.mkstemp(dir=path.parent, suffix='.npz')
  try:
    with os.fdopen(fd, 'wb') as tmp:
      np.savez(tmp, **arrays)
    os.chmod(tmp_name, 0o644)
    info = dict(stats.info, npz_sha256=inception_weights.file_sha256(tmp_name))
    os.replace(tmp_name, path)
  finally:
    if os.path.exists(tmp_name):
      os.unlink(tmp_name)
  json_tmp = path.with_suffix('.json.tmp')
  json_tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
  os.replace(json_tmp, path.with_suffix('.json'))
  return info


def load_reference_statistics(path: str | os.PathLike) -> ReferenceStatistics:
  """Reads statistics written by `save_reference_statistics`.

  Raises:
    FileNotFoundError: the .npz or its .json is missing.
    ValueError: the .npz does not match the sha256 in its .json.
  """
  path = pathlib.Path(path)
  info = json.loads(path.with_suffix('.json').read_text())
  if inception_weights.file_sha256(path) != info.get('npz_sha256'):
    raise ValueError(f'{path} does not match the sha256 in its .json sidecar '
                     '(corrupt or replaced); delete both to recompute.')
  with np.load(path) as data:
    logits = data['logits'] if 'logits' in data.files else None
    return ReferenceStatistics(mu=data['mu'], sigma=data['sigma'],
                               features=data['features'], logits=logits,
                               info=info)


def reference_statistics(
    batches: Callable[[], Iterable[np.ndarray]], *,
    extractor: features_lib.FeatureExtractor,
    fingerprint: str, num_images: int, resolution: int, resize_method: str,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True) -> ReferenceStatistics:
  """Statistics of real images, from the cache or computed and cached.

  Args:
    batches: called only on a cache miss; returns an iterable of
      [B, resolution, resolution, 3] uint8 (or float [-1, 1]) batches of
      the reference images (with several processes: this process's share).
    extractor: from `features.feature_extractor`.
    fingerprint: `dataset_fingerprint(...)` of the images' source.
    num_images: images to use over all processes (fewer if the data runs
      out; the json records the actual count).
    resolution: the images' side length as fed to the extractor.
    resize_method: how the source images were brought to `resolution`
      (e.g. 'PIL bicubic'); part of the key because it changes FID.
    cache_dir: default `inception_weights.default_cache_dir()`.
    progress: progress line on stderr.

  Returns:
    The statistics; `info` holds the provenance.
  """
  cache_dir = (pathlib.Path(cache_dir) if cache_dir
               else inception_weights.default_cache_dir())
  provenance = extractor.provenance()
  fields = _key_fields(provenance, fingerprint, num_images, resolution,
                       resize_method)
  path = cache_dir / 'reference_stats' / f'{cache_key(fields)}.npz'
  cached = _load_matching(path, fields)
  # Extraction is collective: every process must agree to compute (e.g. the
  # cache is local to each host and only some hosts have it).
  if _everywhere(cached is not None):
    return cached
  features, logits = features_lib.extract_features(
      extractor, batches(), num_images=num_images // jax.process_count(),
      progress=progress,
      description='Reference features')
  mu, sigma = fid.gaussian_statistics(features)
  info = dict(provenance, **fields, num_images=int(features.shape[0]),
              created=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
  stats = ReferenceStatistics(mu=mu, sigma=sigma, features=features,
                              logits=logits, info=info)
  if jax.process_index() != 0:
    return stats  # Process 0 writes the cache: one writer.
  info = save_reference_statistics(path, stats)
  return dataclasses.replace(stats, info=info)


def _load_matching(path: pathlib.Path,
                   fields: Mapping[str, Any]) -> ReferenceStatistics | None:
  """The cached statistics at `path` if they match `fields`, else None."""
  if not (path.is_file() and path.with_suffix('.json').is_file()):
    return None
  try:
    stats = load_reference_statistics(path)
  except (ValueError, OSError, KeyError):
    return None  # Corrupt: recompute and overwrite.
  if all(stats.info.get(k) == v for k, v in fields.items()):
    return stats
  return None


def _everywhere(condition: bool) -> bool:
  """Whether `condition` holds on every process."""
  if jax.process_count() == 1:
    return condition
  return bool(multihost_utils.process_allgather(np.array(condition)).all())
