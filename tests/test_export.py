"""Exported generators: they run without this project and match the model.

One tiny untrained state (its EMA weights scaled so that the EMA and the raw
generator differ) is exported once per module; the round trips run in fresh
Python processes that import only jax and numpy (or only TensorFlow), as a
user of the files would.
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from facegan_jax import checkpointing
from facegan_jax import export
from facegan_jax import partitioning
from facegan_jax import scoring
from facegan_jax import train_step
from tests.tiny import tiny_config

BATCH_SIZES = (3, 11)  # Two batch sizes: the batch dimension must be symbolic.

# A user's loader: jax, numpy and json only. argv: export dir, io dir.
JAX_LOADER = """
import json, os, sys
import jax, numpy as np
export_dir, io_dir = sys.argv[1:3]
with open(os.path.join(export_dir, 'signature.json')) as f:
  signature = json.load(f)
with open(os.path.join(export_dir, 'generator.stablehlo'), 'rb') as f:
  generator = jax.export.deserialize(bytearray(f.read()))
for n in map(int, sys.argv[3:]):
  z = np.load(os.path.join(io_dir, f'z{n}.npy'))
  assert z.shape == (n, signature['latent_dim'])
  np.save(os.path.join(io_dir, f'images{n}.npy'), np.asarray(generator.call(z)))
assert 'facegan_jax' not in sys.modules, 'the loader imported facegan_jax'
"""

# The same with TensorFlow alone: jax cannot be imported (tf.lite tries).
TF_LOADER = """
import os, sys
sys.modules['jax'] = sys.modules['facegan_jax'] = None  # Importing fails.
import numpy as np, tensorflow as tf
export_dir, io_dir = sys.argv[1:3]
serve = tf.saved_model.load(
    os.path.join(export_dir, 'saved_model')).signatures['serving_default']
for n in map(int, sys.argv[3:]):
  z = tf.constant(np.load(os.path.join(io_dir, f'z{n}.npy')))
  np.save(os.path.join(io_dir, f'images{n}.npy'), serve(z=z)['images'].numpy())
"""


def _latents(n: int) -> np.ndarray:
  return np.random.default_rng(n).standard_normal((n, 16)).astype(np.float32)


def _run_loader(script: str, export_dir, io_dir) -> dict[int, np.ndarray]:
  """Runs `script` in a fresh interpreter; images per batch size."""
  os.makedirs(io_dir)
  for n in BATCH_SIZES:
    np.save(os.path.join(io_dir, f'z{n}.npy'), _latents(n))
  done = subprocess.run(
      [sys.executable, '-c', script, str(export_dir), str(io_dir),
       *map(str, BATCH_SIZES)],
      cwd=io_dir, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return {n: np.load(os.path.join(io_dir, f'images{n}.npy'))
          for n in BATCH_SIZES}


def _model_images(run, z, use_ema=True) -> np.ndarray:
  _, program, state = run
  return np.asarray(program.sample(*state.generator_variables(use_ema), z))


def _call_export(export_dir, z) -> np.ndarray:
  with open(os.path.join(export_dir, export.STABLEHLO_FILE), 'rb') as f:
    return np.asarray(jax.export.deserialize(bytearray(f.read())).call(z))


@pytest.fixture(scope='module')
def run():
  """(config, program, state) of a fresh tiny run; EMA != raw generator."""
  config = tiny_config()
  program = train_step.build_program(config, partitioning.create_mesh())
  state = program.init(jax.random.PRNGKey(0))
  # Scaled up: the DCGAN init (std 0.02) generates images of about 1e-4,
  # where a 1e-5 tolerance would hide any mistake; x3 gives std ~0.2.
  return config, program, state.replace(
      ema_params=jax.tree.map(lambda x: x * 3.0, state.ema_params),
      g_params=jax.tree.map(lambda x: x * 2.5, state.g_params))


@pytest.fixture(scope='module')
def ema_export(run, tmp_path_factory):
  """(folder, returned signature) of the default export."""
  out_dir = tmp_path_factory.mktemp('exports') / 'ema'
  return out_dir, export.export_generator(*run, str(out_dir))


def test_stablehlo_runs_without_facegan_jax_for_any_batch_size(
    run, ema_export, tmp_path):
  out_dir, _ = ema_export
  images = _run_loader(JAX_LOADER, out_dir, tmp_path / 'io')
  for n in BATCH_SIZES:
    assert images[n].shape == (n, 32, 32, 3)
    assert images[n].dtype == np.float32
    assert images[n].min() >= -1 and images[n].max() <= 1
    np.testing.assert_allclose(images[n], _model_images(run, _latents(n)),
                               atol=1e-5)


def test_signature_describes_the_export(run, ema_export):
  config, _, _ = run
  out_dir, returned = ema_export
  with open(out_dir / export.SIGNATURE_FILE) as f:
    signature = json.load(f)
  assert signature == returned
  assert signature['latent_dim'] == 16
  assert signature['resolution'] == 32
  assert signature['output_range'] == [-1, 1]
  assert signature['input'] == {'name': 'z', 'shape': ['N', 16],
                                'dtype': 'float32'}
  assert signature['output']['shape'] == ['N', 32, 32, 3]
  assert signature['output']['dtype'] == 'float32'
  assert signature['latent_distribution'] == 'standard normal'
  assert signature['attributes'] == [] and 'labels' not in signature
  assert signature['platforms'] == ['cpu', 'cuda', 'tpu']
  assert signature['jax_version'] == jax.__version__
  assert signature['use_ema'] is True and signature['step'] == 0
  assert 'jax.export' in signature['format']
  assert signature['config']['model']['g_width'] == 8
  # The run's config comes back whole, as saved_run reads a checkpoint's.
  assert (checkpointing.config_from_meta(signature['config']).to_dict() ==
          config.to_dict())
  assert sorted(os.listdir(out_dir)) == ['generator.stablehlo',
                                         'signature.json']


def test_use_ema_false_exports_the_raw_generator(run, ema_export, tmp_path):
  out_dir, _ = ema_export
  signature = export.export_generator(*run, str(tmp_path / 'raw'),
                                      use_ema=False, step=7)
  assert signature['use_ema'] is False and signature['step'] == 7
  z = _latents(3)
  raw = _call_export(tmp_path / 'raw', z)
  np.testing.assert_allclose(raw, _model_images(run, z, use_ema=False),
                             atol=1e-5)
  assert np.abs(raw - _call_export(out_dir, z)).max() > 1e-2


def test_a_non_empty_folder_is_refused_unless_overwrite(run, tmp_path):
  out_dir = tmp_path / 'busy'
  (out_dir / 'saved_model').mkdir(parents=True)
  (out_dir / 'saved_model' / 'stale.pb').write_bytes(b'stale')
  (out_dir / 'generator.stablehlo').write_bytes(b'old')
  (out_dir / 'notes.txt').write_text('mine')
  with pytest.raises(ValueError, match='overwrite'):
    export.export_generator(*run, str(out_dir))
  assert (out_dir / 'generator.stablehlo').read_bytes() == b'old'
  assert (out_dir / 'saved_model' / 'stale.pb').read_bytes() == b'stale'
  assert sorted(os.listdir(out_dir)) == ['generator.stablehlo', 'notes.txt',
                                         'saved_model']

  export.export_generator(*run, str(out_dir), overwrite=True)
  # Ours replaced (the stale SavedModel would contradict the new model), the
  # user's file kept, and no staging folder left behind.
  assert sorted(os.listdir(out_dir)) == ['generator.stablehlo', 'notes.txt',
                                         'signature.json']
  assert (out_dir / 'notes.txt').read_text() == 'mine'
  z = _latents(3)
  np.testing.assert_allclose(_call_export(out_dir, z), _model_images(run, z),
                             atol=1e-5)
  assert os.listdir(tmp_path) == ['busy']


def test_a_failed_export_leaves_nothing_behind(run, tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise RuntimeError('conversion failed')
  monkeypatch.setattr(export, '_write_saved_model', fail)
  with pytest.raises(RuntimeError, match='conversion failed'):
    export.export_generator(*run, str(tmp_path / 'new'), saved_model=True)
  assert os.listdir(tmp_path) == []


def test_standardized_outputs_are_mapped_back_to_unit_range(run, tmp_path):
  pytest.importorskip('tensorflow')  # The dataset statistics need it.
  _, program, state = run
  config = tiny_config(**{'dataset.standardize': True})
  export.export_generator(config, program, state, str(tmp_path / 'std'))
  z = _latents(5)
  offset, scale = scoring.pixel_normalization(config.dataset)
  pixels = _model_images(run, z) / scale + offset
  expected = np.clip((pixels - 127.5) / 127.5, -1, 1)
  images = _call_export(tmp_path / 'std', z)
  np.testing.assert_allclose(images, expected, atol=1e-5)
  assert np.abs(images - _model_images(run, z)).max() > 1e-2


def test_saved_model_runs_with_tensorflow_alone(run, tmp_path):
  pytest.importorskip('tensorflow')
  out_dir = tmp_path / 'tf'
  signature = export.export_generator(*run, str(out_dir), saved_model=True)
  assert signature['saved_model']['signature'] == 'serving_default'
  images = _run_loader(TF_LOADER, out_dir, tmp_path / 'io')
  for n in BATCH_SIZES:
    assert images[n].shape == (n, 32, 32, 3)
    assert images[n].dtype == np.float32
    np.testing.assert_allclose(images[n], _model_images(run, _latents(n)),
                               atol=1e-5)


def test_saved_model_without_tensorflow_says_what_to_do(run, tmp_path,
                                                        monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow', None)  # Importing fails.
  with pytest.raises(export.SavedModelError, match='needs TensorFlow'):
    export.export_generator(*run, str(tmp_path / 'new'), saved_model=True)
  assert os.listdir(tmp_path) == []


def test_a_conditional_generator_takes_its_labels_as_a_second_input(
    tmp_path):
  config = tiny_config(**{'dataset.attributes': 'Smiling,Male'})
  program = train_step.build_program(config, partitioning.create_mesh())
  state = program.init(jax.random.PRNGKey(0))
  state = state.replace(
      ema_params=jax.tree.map(lambda x: x * 3.0, state.ema_params))
  with_tf = importlib.util.find_spec('tensorflow') is not None
  out_dir = tmp_path / 'conditional'
  signature = export.export_generator(config, program, state, str(out_dir),
                                      saved_model=with_tf)
  assert signature['attributes'] == ['Smiling', 'Male']
  assert signature['labels'] == {
      'name': 'labels', 'shape': ['N', 2], 'dtype': 'float32',
      'values': '1 (has the attribute) or 0, in the order of attributes'}
  assert 'call(z, labels)' in signature['format']
  z = _latents(3)
  labels = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
  expected = np.asarray(program.sample(*state.generator_variables(True), z,
                                       labels=labels))
  with open(out_dir / export.STABLEHLO_FILE, 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  np.testing.assert_allclose(np.asarray(exported.call(z, labels)), expected,
                             atol=1e-5)
  # The labels change the faces (they are not ignored inputs).
  changed = np.asarray(exported.call(z, 1 - labels))
  assert np.abs(changed - expected).max() > 1e-3
  if with_tf:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    serve = tf.saved_model.load(str(out_dir / 'saved_model')).signatures[
        'serving_default']
    np.testing.assert_allclose(
        serve(z=tf.constant(z), labels=tf.constant(labels))['images'].numpy(),
        expected, atol=1e-5)
    assert signature['saved_model']['input'] == 'z, labels'
