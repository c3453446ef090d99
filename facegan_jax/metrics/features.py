"""Jitted, optionally sharded Inception features over batches of images.

`feature_extractor(mesh)` builds the jitted function once;
`extract_features(extractor, batches)` runs it over an iterable of image
batches with a progress line on stderr and returns numpy arrays. Images are
uint8 [0, 255] or float [-1, 1], [B, H, W, 3], any resolution (resized to
299 inside the jitted function, on the device).
"""

from collections.abc import Iterable
import importlib.metadata
import os
import sys
import time
from typing import Any

import jax
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
import numpy as np

from facegan_jax import partitioning
from facegan_jax.metrics import inception
from facegan_jax.metrics import inception_weights


def package_version() -> str:
  """facegan-jax's installed version, or 'unknown' when run from a checkout."""
  try:
    return importlib.metadata.version('facegan-jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def provenance(weights: inception_weights.InceptionWeights) -> dict[str, Any]:
  """What a score depends on besides the images; store it next to the score.

  Args:
    weights: the weights the features were computed with.

  Returns:
    A json-serializable dict.
  """
  return {
      'feature_network': 'FID Inception-v3 (TF graph 2015-12-05)',
      'weights_sha256': weights.sha256,
      'weights_source': weights.source,
      'weights_source_sha256': weights.source_sha256,
      'resize_method': inception.RESIZE_METHOD,
      'inception_input_size': inception.INPUT_SIZE,
      'float_images': 'quantized: floor(x * 127.5 + 128) clipped to [0, 255]',
      'is_logits': ('pool3 @ W without the classifier bias, as the original '
                    'IS code' if weights.has_logits else
                    'unavailable: these weights have no classifier'),
      'package': 'facegan-jax',
      'package_version': package_version(),
  }


class FeatureExtractor:
  """images [B, H, W, 3] -> (pool3 [B, 2048], logits [B, 1008] or None).

  Built by `feature_extractor`. Compiles once per input shape and dtype.
  With a mesh, the batch is split over the mesh's 'data' axis and the
  parameters are replicated; B must then be a multiple of the mesh size.
  """

  def __init__(self, weights: inception_weights.InceptionWeights,
               mesh: Mesh | None = None,
               precision: lax.Precision = lax.Precision.HIGHEST):
    self.weights = weights
    self.mesh = mesh
    model = inception.FIDInceptionV3(with_logits=weights.has_logits,
                                     precision=precision)

    def forward(params, images):
      pool3, logits = model.apply({'params': params},
                                  inception.preprocess(images))
      return {'pool3': pool3} if logits is None else {'pool3': pool3,
                                                       'logits': logits}

    if mesh is None:
      self._params = jax.device_put(weights.params)
      self._forward = jax.jit(forward)
    else:
      self._params = jax.device_put(weights.params,
                                    partitioning.replicated(mesh))
      self._forward = jax.jit(
          forward,
          in_shardings=(partitioning.replicated(mesh),
                        partitioning.batch_sharding(mesh)),
          out_shardings=partitioning.batch_sharding(mesh))

  @property
  def has_logits(self) -> bool:
    return self.weights.has_logits

  @property
  def num_shards(self) -> int:
    """Devices the batch is split over; batch sizes must be a multiple."""
    return 1 if self.mesh is None else self.mesh.devices.size

  def __call__(self, images: Any) -> tuple[jax.Array, jax.Array | None]:
    """Features of one batch (arrays stay on device).

    Args:
      images: [B, H, W, 3] uint8 or float in [-1, 1]; numpy or jax.Array
        (a global array already sharded on the mesh is used as is).

    Returns:
      pool3 [B, 2048] float32 and logits [B, 1008] float32 (None when the
      weights have no classifier).
    """
    if images.shape[0] % self.num_shards:
      raise ValueError(
          f'Batch of {images.shape[0]} images does not split over '
          f'{self.num_shards} devices; use a multiple of {self.num_shards}.')
    out = self._forward(self._params, images)
    return out['pool3'], out.get('logits')

  def provenance(self) -> dict[str, Any]:
    return provenance(self.weights)


def feature_extractor(mesh: Mesh | None = None, *,
                      weights: inception_weights.InceptionWeights | None = None,
                      weights_path: str | os.PathLike | None = None,
                      download: bool = True,
                      precision: lax.Precision = lax.Precision.HIGHEST
                      ) -> FeatureExtractor:
  """Builds the jitted Inception feature function.

  Args:
    mesh: shard batches over its 'data' axis; None = default device.
    weights: already loaded weights; else found by
      `inception_weights.find_weights(weights_path, download=download)`.
    weights_path: explicit weights file (see `find_weights`).
    download: allow downloading pytorch-fid's weights if none are found.
    precision: convolution precision (HIGHEST keeps float32 on GPU/TPU).

  Returns:
    A FeatureExtractor: call it on [B, H, W, 3] batches.
  """
  if weights is None:
    weights = inception_weights.find_weights(weights_path, download=download)
  return FeatureExtractor(weights, mesh, precision)


class _Progress:
  """One self-overwriting progress line on stderr, at most every `every_s`."""

  def __init__(self, description: str, total: int | None, enabled: bool,
               every_s: float = 2.0):
    self.description = description
    self.total = total
    self.enabled = enabled and jax.process_index() == 0
    self.every_s = every_s
    self.start = time.perf_counter()
    self.last = -every_s

  def update(self, done: int, final: bool = False) -> None:
    now = time.perf_counter()
    if not self.enabled or (not final and now - self.last < self.every_s):
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    of_total = f'/{self.total}' if self.total else ''
    end = '\n' if final else ''
    print(f'\r{self.description}: {done}{of_total} images '
          f'({rate:.1f} img/s)', end=end, file=sys.stderr, flush=True)


def _pad_batch(images: np.ndarray, size: int) -> np.ndarray:
  if images.shape[0] == size:
    return images
  pad = np.zeros((size - images.shape[0], *images.shape[1:]), images.dtype)
  return np.concatenate([images, pad])


def extract_features(extractor: FeatureExtractor,
                     batches: Iterable[Any], *,
                     num_images: int | None = None,
                     progress: bool = True,
                     description: str = 'Inception features'
                     ) -> tuple[np.ndarray, np.ndarray | None]:
  """Runs `extractor` over image batches; gathers features on the host.

  Every batch is padded to the size of the first one (rounded up to a
  multiple of the device count), so the function compiles once. With
  several processes, each passes its own images, every process must yield
  the same number of batches of the same size, and all get all features.

  Args:
    extractor: from `feature_extractor`.
    batches: iterable of [B, H, W, 3] uint8 or float [-1, 1] numpy arrays.
    num_images: stop after this many images (this process's share);
      None = exhaust `batches`. Also the progress total.
    progress: print progress to stderr (process 0 only).
    description: label of the progress line.

  Returns:
    pool3 [N, 2048] float32 and logits [N, 1008] float32 (None when the
    weights have no classifier).
  """
  num_processes = jax.process_count()
  bar = _Progress(description, num_images and num_images * num_processes,
                  progress)
  pool3_parts, logits_parts = [], []
  padded_size, done, pending = None, 0, None

  def collect(outputs, count):
    pool3, logits = _to_host(outputs, count, padded_size, num_processes)
    pool3_parts.append(pool3)
    if logits is not None:
      logits_parts.append(logits)

  for images in batches:
    images = np.asarray(images)
    if num_images is not None:
      images = images[:num_images - done]
    count = images.shape[0]
    if count == 0:
      break
    if padded_size is None:
      shards = extractor.num_shards // num_processes or 1
      padded_size = -(-count // shards) * shards
    if count > padded_size:
      raise ValueError(f'Batch of {count} images is larger than the first '
                       f'batch ({padded_size}); keep batch sizes constant.')
    padded = _pad_batch(images, padded_size)
    if num_processes > 1:
      padded = partitioning.make_global_batch(padded, extractor.mesh)
    outputs = extractor(padded)  # Dispatched asynchronously.
    # Fetch the previous batch only now, so the device works on this one
    # while the host fetches and then loads the next.
    if pending is not None:
      collect(*pending)
    pending = (outputs, count)
    done += count
    bar.update(done * num_processes)
    if num_images is not None and done >= num_images:
      break
  if pending is not None:
    collect(*pending)
  bar.update(done * num_processes, final=True)
  if not pool3_parts:
    raise ValueError('No images: the batch iterable was empty.')
  pool3 = np.concatenate(pool3_parts).astype(np.float32)
  logits = (np.concatenate(logits_parts).astype(np.float32)
            if logits_parts else None)
  return pool3, logits


def _to_host(outputs, count: int, padded_size: int, num_processes: int):
  """Device outputs of one padded batch -> numpy rows of the real images."""
  pool3, logits = outputs
  if num_processes == 1:
    return (np.asarray(pool3)[:count],
            None if logits is None else np.asarray(logits)[:count])
  # The global arrays hold each process's padded rows, process by process.
  gathered = multihost_utils.process_allgather((pool3, logits), tiled=True)
  trimmed = []
  for value in gathered:
    if value is None:
      trimmed.append(None)
      continue
    value = np.asarray(value).reshape(num_processes, padded_size, -1)
    trimmed.append(value[:, :count].reshape(-1, value.shape[-1]))
  return tuple(trimmed)
