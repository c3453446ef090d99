"""The attribute classifier, latent directions and `python -m
facegan_jax.attributes`.

The classifier learns a synthetic attribute it can see (the left half of
the image is brighter); directions are checked against a plane known in
advance. The command-line tests run the real tool in subprocesses (its absl
flags would clash with facegan_jax.evaluate's in this process) on a prepared
folder with CSV labels and on a real Orbax checkpoint of the tiny config.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facegan_jax import attribute_classifier
from facegan_jax import conditioning
from facegan_jax import directions
from facegan_jax import latents
from facegan_jax import scoring
from tests.tiny import grid_cells
from tests.tiny import save_untrained_run
from tests.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ('LeftBright', 'Coin')
SIZE = 32
WIDTHS = (8, 16)
STEP = 2


def _cli(*args, tool='attributes'):
  return subprocess.run(
      [sys.executable, '-m', f'facegan_jax.{tool}', *map(str, args)],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def synthetic(num, seed=0):
  """(uint8 images [num, 32, 32, 3], labels [num, 2]): LeftBright (30% of
  the images) brightens the left half; Coin (50%) changes nothing."""
  rng = np.random.default_rng(seed)
  labels = np.stack([rng.random(num) < 0.3, rng.random(num) < 0.5], 1)
  images = rng.integers(0, 120, (num, SIZE, SIZE, 3))
  images[:, :, :SIZE // 2] += 120 * labels[:, :1, None, None]
  return images.astype(np.uint8), labels.astype(np.int32)


@pytest.fixture(scope='module')
def trained():
  """(classifier, report) trained on 500 synthetic images."""
  images, labels = synthetic(500)
  return attribute_classifier.train_classifier(
      images, labels, NAMES, steps=60, batch_size=32, learning_rate=3e-3,
      widths=WIDTHS, seed=0, flip=False)  # LeftBright is no mirror image.


@pytest.fixture(scope='module')
def saved(trained, tmp_path_factory):
  folder = tmp_path_factory.mktemp('classifier')
  attribute_classifier.save(trained[0], str(folder), trained[1])
  return folder


# --- The classifier ----------------------------------------------------------


def test_classifier_reads_a_visible_attribute_better_than_the_baseline(
    trained):
  _, report = trained
  accuracy = report['heldout_accuracy']['LeftBright']
  baseline = report['baseline_accuracy']['LeftBright']
  assert accuracy > 0.9 and accuracy > baseline + 0.15, report
  assert 0.55 < baseline < 0.85  # The held-out part's share of "off".
  assert report['num_heldout'] == 50 and report['num_train'] == 450
  assert set(report['heldout_accuracy']) == set(NAMES)
  assert report['mean_accuracy'] == pytest.approx(
      np.mean(list(report['heldout_accuracy'].values())), abs=1e-4)


def test_heldout_split_is_disjoint_complete_and_seeded():
  train_part, heldout = attribute_classifier.split_indices(100, 0.1, seed=3)
  again = attribute_classifier.split_indices(100, 0.1, seed=3)
  np.testing.assert_array_equal(train_part, again[0])
  np.testing.assert_array_equal(heldout, again[1])
  assert len(heldout) == 10 and not set(train_part) & set(heldout)
  assert sorted([*train_part, *heldout]) == list(range(100))
  other = attribute_classifier.split_indices(100, 0.1, seed=4)[1]
  assert set(other) != set(heldout)
  for fraction in (0.0, 1.0, 0.001):
    with pytest.raises(ValueError, match='both need at least one'):
      attribute_classifier.split_indices(100, fraction, seed=0)


def test_save_and_load_give_the_same_predictions(trained, saved):
  classifier, report = trained
  images, _ = synthetic(37, seed=1)
  expected = attribute_classifier.predict_probabilities(classifier, images)
  loaded, description = attribute_classifier.load(str(saved))
  assert (loaded.names, loaded.resolution, loaded.widths) == (
      NAMES, SIZE, WIDTHS)
  assert description['report'] == json.loads(json.dumps(report))
  np.testing.assert_array_equal(
      attribute_classifier.predict_probabilities(loaded, images), expected)
  # The batch size does not change the answers (padded fixed-size batches).
  np.testing.assert_allclose(attribute_classifier.predict_probabilities(
      loaded, images, batch_size=8), expected, atol=1e-6)
  assert expected.shape == (37, 2) and expected.dtype == np.float32
  with pytest.raises(ValueError, match='reads uint8'):
    attribute_classifier.predict_probabilities(loaded, images[:, :16, :16])
  with pytest.raises(ValueError, match='attributes train --data='):
    attribute_classifier.load(str(saved.parent))


def test_flip_mirrors_about_half_of_a_batch():
  images, _ = synthetic(64)
  mirrored = attribute_classifier._mirrored(  # pylint: disable=protected-access
      images, np.random.default_rng(0))
  same = (mirrored == images).all(axis=(1, 2, 3))
  flipped = (mirrored == images[:, :, ::-1]).all(axis=(1, 2, 3))
  assert (same | flipped).all() and 16 < flipped.sum() < 48


def test_downscale_averages_blocks_and_refuses_to_upscale():
  images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  small = attribute_classifier.downscale(images, 2)
  np.testing.assert_array_equal(
      small[0, 0, 0], np.round(images[0, :2, :2].reshape(4, 3).mean(0)))
  assert attribute_classifier.downscale(images, 4) is images
  with pytest.raises(ValueError, match='without inventing detail'):
    attribute_classifier.downscale(images, 8)


# --- Directions --------------------------------------------------------------


def _planted(num=2000, dim=16, seed=0):
  """Latents, labels of two known planes and their unit normals."""
  rng = np.random.default_rng(seed)
  normals = rng.normal(size=(2, dim))
  normals /= np.linalg.norm(normals, axis=1, keepdims=True)
  z = rng.normal(size=(num, dim))
  noise = 0.3 * rng.normal(size=(num, 2))
  # The first is on above an offset plane (about 30% of the samples); the
  # second is on *below* its plane, so its direction is -normal.
  labels = np.stack([z @ normals[0] + noise[:, 0] > 0.5,
                     z @ normals[1] + noise[:, 1] < 0], 1)
  return z, labels.astype(np.int32), normals


def test_directions_recover_planted_planes_pointing_to_more():
  z, labels, normals = _planted()
  fit = directions.fit_directions(z, labels, ('Up', 'Down'))
  assert fit.skipped == {}
  assert fit.directions.shape == (2, 16) and fit.directions.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(fit.directions, axis=1), 1,
                             atol=1e-6)
  assert fit.directions[0] @ normals[0] > 0.95
  assert fit.directions[1] @ normals[1] < -0.95  # Oriented towards "on".
  assert (fit.heldout_accuracy > fit.baseline_accuracy + 0.1).all()
  assert (fit.heldout_accuracy > 0.8).all()
  np.testing.assert_array_equal(fit.positives, labels.sum(0))
  # Moving along the direction turns the attribute on.
  edited = directions.edit_latents(z[0], fit.directions[0], [-4.0, 0.0, 4.0])
  np.testing.assert_array_equal(edited[1], z[0].astype(np.float32))
  np.testing.assert_allclose(edited[2] - edited[1], 4 * fit.directions[0],
                             atol=1e-5)
  assert edited[0] @ normals[0] < 0.5 < edited[2] @ normals[0]


def test_a_rare_attribute_is_skipped_with_the_reason():
  z, labels, _ = _planted(num=200)
  labels[:, 1] = 0
  labels[:3, 1] = 1
  fit = directions.fit_directions(z, labels, ('Up', 'Rare'))
  assert set(fit.skipped) == {'Rare'}
  assert 'only 3 of 200 samples have it' in fit.skipped['Rare']
  assert not fit.directions[1].any() and np.isnan(fit.heldout_accuracy[1])
  assert np.isfinite(fit.heldout_accuracy[0])
  with pytest.raises(ValueError, match="No direction for 'Rare'"):
    fit.index('Rare')
  assert fit.index('Up') == 0
  labels[:, 1] = 1
  assert 'lack it' in directions.fit_directions(
      z, labels, ('Up', 'Rare')).skipped['Rare']


def test_condition_removes_the_other_directions():
  rng = np.random.default_rng(0)
  primary, others = rng.normal(size=8), rng.normal(size=(2, 8))
  others = np.concatenate([others, others[:1] * 2, np.zeros((1, 8))])
  result = directions.condition(primary, others)
  np.testing.assert_allclose(others @ result, 0, atol=1e-6)
  assert np.linalg.norm(result) == pytest.approx(1, abs=1e-6)
  assert result @ primary > 0
  with pytest.raises(ValueError, match='span of the others'):
    directions.condition(others[0] + others[1], others)


# --- Command line: train -----------------------------------------------------


def _prepared(tmp_path, name, num, with_labels):
  """A prepared 32x32 folder of synthetic images, CSV-labelled or not."""
  from input_pipeline import prepare  # pylint: disable=g-import-not-at-top
  src = tmp_path / f'{name}_src'
  src.mkdir()
  images, labels = synthetic(num, seed=2)
  rows = ['filename,' + ','.join(NAMES)]
  for index, (image, label) in enumerate(zip(images, labels)):
    Image.fromarray(image).save(src / f'{index:03d}.png')
    rows.append(f'{index:03d}.png,' + ','.join(map(str, label)))
  (tmp_path / f'{name}.csv').write_text('\n'.join(rows) + '\n')
  out = tmp_path / name
  prepare.prepare(str(src), str(out), SIZE, progress=False,
                  labels=str(tmp_path / f'{name}.csv') if with_labels
                  else None)
  return out


def test_train_cli_saves_a_classifier_and_prints_its_accuracy(tmp_path):
  data = _prepared(tmp_path, 'data', 40, with_labels=True)
  out = tmp_path / 'classifier'
  result = _cli('train', f'--data={data}', f'--out={out}', '--steps=3',
                '--batch_size=8', '--heldout_fraction=0.25')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Step 3/3' in result.stderr
  summary = json.loads(result.stdout)
  assert set(summary) == {
      'heldout_accuracy', 'baseline_accuracy', 'mean_accuracy',
      'mean_baseline_accuracy', 'num_train', 'num_heldout', 'train_seconds',
      'classifier', 'resolution'}
  assert (summary['num_train'], summary['num_heldout']) == (30, 10)
  assert set(summary['heldout_accuracy']) == set(NAMES)
  assert summary['classifier'] == str(out) and summary['resolution'] == SIZE
  assert sorted(os.listdir(out)) == ['classifier.json', 'weights.msgpack']
  classifier, description = attribute_classifier.load(str(out))
  assert classifier.names == NAMES
  assert description['report']['heldout_accuracy'] == (
      summary['heldout_accuracy'])
  assert description['report']['settings']['steps'] == 3
  assert description['report']['settings']['flip'] is True  # The default.
  assert description['report']['data'] == str(data)
  # A full --out is refused: nothing is overwritten.
  again = _cli('train', f'--data={data}', f'--out={out}', '--steps=1')
  assert again.returncode != 0 and 'is not empty' in again.stderr
  assert 'Traceback' not in again.stderr


def test_train_cli_refuses_unlabelled_data_and_misplaced_flags(tmp_path):
  data = _prepared(tmp_path, 'plain', 4, with_labels=False)
  out = tmp_path / 'classifier'
  cases = [
      (['train', f'--data={data}', f'--out={out}'],
       'was prepared without attribute labels'),
      ([f'--data={data}', f'--out={out}'], 'Pass one subcommand'),
      (['train', f'--data={data}'], 'train needs --out'),
      (['train', f'--data={data}', f'--out={out}', '--workdir=w'],
       '--workdir does not apply to train'),
  ]
  for args, message in cases:
    result = _cli(*args)
    assert result.returncode != 0, args
    assert message in result.stderr, (args, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr, result.stderr
  assert not out.exists()


def test_the_tool_does_not_import_the_other_tools():
  # generate and evaluate define flags of the same names.
  result = subprocess.run(
      [sys.executable, '-c', 'import sys, facegan_jax.attributes; '
       'print(sorted(m for m in sys.modules if m in ('
       '"facegan_jax.generate", "facegan_jax.evaluate")))'],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '[]'


# --- Command line: directions and score --------------------------------------


def _saved_run(workdir, config):
  """A fresh state saved at step 2 whose images vary with z and, 5x
  strengthened, the labels (tests.tiny.save_untrained_run)."""
  return save_untrained_run(workdir, config, STEP, label_boost=5)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """An unconditional tiny run."""
  return _saved_run(tmp_path_factory.mktemp('run'), tiny_config())


@pytest.fixture(scope='module')
def conditional_run(tmp_path_factory):
  """A tiny run conditioned on NAMES, with a label bank of 4 vectors."""
  workdir = tmp_path_factory.mktemp('conditional_run')
  conditioning.save_label_bank(workdir, NAMES,
                               np.array([[1, 0], [0, 1], [1, 1], [0, 0]]))
  return _saved_run(workdir, tiny_config(
      **{'dataset.attributes': ','.join(NAMES)}))


def test_directions_cli_fits_the_classifiers_labels_of_the_runs_samples(
    run, trained, saved):
  workdir, config, program, state = run
  num = 48
  result = _cli('directions', f'--workdir={workdir}', f'--classifier={saved}',
                f'--num={num}', '--seed=5', '--batch_size=16',
                '--min_per_class=2')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout)
  assert summary == json.loads((workdir / 'directions.json').read_text())
  assert (summary['step'], summary['latent_dim'], summary['num_samples'],
          summary['directions']) == (STEP, config.model.latent_dim, num,
                                     str(workdir / 'directions.npz'))
  # The same samples, labelled and fitted here, give the same directions:
  # image i of the tool is latent i of --seed.
  # Labelled batch by batch, as the tool does.
  labels = np.concatenate([
      attribute_classifier.predict_probabilities(trained[0], images) > 0.5
      for images in scoring.generate_images(config, program, state, num, 16,
                                            seed=5)]).astype(np.int32)
  z = latents.latent_vectors(scoring.mesh_of(program), 5, num,
                             config.model.latent_dim)
  expected = directions.fit_directions(z, labels, NAMES, min_per_class=2)
  saved_fit = np.load(workdir / 'directions.npz')
  assert list(saved_fit['names']) == list(NAMES)
  np.testing.assert_array_equal(saved_fit['positives'], labels.sum(0))
  np.testing.assert_allclose(saved_fit['directions'], expected.directions,
                             atol=1e-5)
  assert summary['positives'] == dict(zip(NAMES, labels.sum(0).tolist()))
  assert summary['skipped'] == expected.skipped
  assert summary['fitted'] == [n for n in NAMES if n not in expected.skipped]


def test_score_and_directions_errors_say_what_to_do(run, saved, tmp_path):
  workdir = run[0]
  cases = [
      (['score', f'--workdir={workdir}', f'--classifier={saved}'],
       'is an unconditional run'),
      (['score', f'--workdir={workdir}', f'--classifier={tmp_path}'],
       'not a trained attribute classifier'),
      (['directions', f'--workdir={tmp_path}', f'--classifier={saved}'],
       'train first'),
      (['score', f'--workdir={workdir}', f'--classifier={saved}',
        '--min_per_class=3'], '--min_per_class does not apply to score'),
  ]
  for args, message in cases:
    result = _cli(*args)
    assert result.returncode != 0, args
    assert message in result.stderr, (args, result.stderr[-2000:])
    assert 'Traceback' not in result.stderr, result.stderr
  assert os.listdir(tmp_path) == []


def test_score_cli_reads_each_attribute_asked_on_and_off(
    conditional_run, trained, saved):
  workdir, config, program, state = conditional_run
  num = 16
  result = _cli('score', f'--workdir={workdir}', f'--classifier={saved}',
                f'--num={num}', '--seed=3', '--batch_size=8')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout)
  assert (summary['step'], summary['num_latents']) == (STEP, num)
  assert set(summary['control_accuracy']) == set(NAMES)
  for name in NAMES:
    assert summary['control_accuracy'][name] == pytest.approx(
        (summary['when_on'][name] + summary['when_off'][name]) / 2, abs=1e-4)
  assert summary['classifier_accuracy'] == trained[1]['heldout_accuracy']
  assert summary['mean_control_accuracy'] == pytest.approx(
      np.mean(list(summary['control_accuracy'].values())), abs=1e-4)
  # Image i: latent i and label vector i of the seed, with the attribute
  # set on, then off.
  z = latents.latent_vectors(scoring.mesh_of(program), 3, num,
                             config.model.latent_dim)
  rows = conditioning.draw_labels(
      conditioning.load_label_bank(workdir, NAMES), 3, num)
  offset, scale = scoring.pixel_normalization(config.dataset)
  for column, name in enumerate(NAMES):
    for value, key in ((1, 'when_on'), (0, 'when_off')):
      labels = rows.copy()
      labels[:, column] = value
      images = np.asarray(scoring.to_uint8(program.sample(
          *state.generator_variables(True), z, 1.0, labels=labels), offset,
                                           scale))
      said = attribute_classifier.predict_probabilities(
          trained[0], images)[:, column] > 0.5
      assert summary[key][name] == pytest.approx(
          (said == value).mean(), abs=1e-4), (name, key)


def test_generate_projects_into_and_edits_a_conditional_run(
    conditional_run, tmp_path):
  workdir, config, program, state = conditional_run
  offset, scale = scoring.pixel_normalization(config.dataset)

  def faces(z, labels):
    z = np.asarray(z, np.float32).reshape(-1, config.model.latent_dim)
    return np.asarray(scoring.to_uint8(program.sample(
        *state.generator_variables(True), z,
        labels=np.repeat(labels[None], len(z), 0)), offset, scale))

  # Seed 2's label vector, with Coin fixed on as --attributes=Coin=1 does
  # (seed 2 draws Coin off, and seed 3 another vector: labels not taken
  # this way show).
  labels = conditioning.draw_labels(
      conditioning.load_label_bank(workdir, NAMES), 2, 1)[0]
  assert labels[1] == 0
  labels[1] = 1
  photo = tmp_path / 'photo.png'
  Image.fromarray(faces(np.full(config.model.latent_dim, 0.5), labels)[0]
                  ).save(photo)
  projected = tmp_path / 'projection'
  result = _cli(f'--workdir={workdir}', f'--project={photo}',
                f'--out={projected}', '--seed=2', '--attributes=Coin=1',
                '--project_steps=5', '--perceptual_weight=0',
                tool='generate')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((projected / 'projection.json').read_text())
  assert summary['attributes'] == dict(zip(NAMES, labels.tolist()))
  latent = np.load(projected / 'latent.npy')
  np.testing.assert_array_equal(
      np.asarray(Image.open(projected / 'reconstruction.png')),
      faces(latent, labels)[0])

  # The projected face, edited along a direction with the same labels.
  direction = np.zeros((2, config.model.latent_dim), np.float32)
  direction[1, :8] = 1.0
  np.savez(workdir / 'directions.npz', directions=direction,
           names=np.array(NAMES))
  strip = tmp_path / 'strip.png'
  result = _cli(f'--workdir={workdir}', f'--latent={projected}/latent.npy',
                '--edit=Coin:2', '--edit_steps=2', '--seed=2',
                '--attributes=Coin=1', f'--out={strip}', tool='generate')
  assert result.returncode == 0, result.stderr[-3000:]
  cells = grid_cells(np.asarray(Image.open(strip).convert('RGB')), 1, 2)[0]
  for cell, strength in zip(cells, (-2.0, 2.0)):
    np.testing.assert_array_equal(
        cell, faces(latent + strength * direction[1], labels)[0])
