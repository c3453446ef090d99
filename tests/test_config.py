"""Config recipes, argument strings, command-line overrides and validation."""

import importlib
import os
import subprocess
import sys

import pytest

from configs import default
from facegan_jax.config_validation import validate_config

RECIPES = ('default', 'wgan_gp', 'dcgan', 'hinge_sn', 'lsgan', 'dragan',
           'stylegan2', 'celeba32_cpu', 'celeba64', 'celeba64_cpu')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recipe(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', RECIPES)
def test_recipes_load_validate_and_keep_the_default_keys(name):
  config = _recipe(name)
  validate_config(config)
  # Recipes override values; they never add or drop keys.
  assert set(_flat_keys(config.to_dict())) == set(
      _flat_keys(default.get_config().to_dict()))


def _flat_keys(tree, prefix=''):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flat_keys(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}'


def test_wgan_gp_has_the_papers_settings():
  config = _recipe('wgan_gp')
  assert (config.optimizer.g_learning_rate, config.optimizer.b1,
          config.optimizer.b2) == (1e-4, 0.0, 0.9)
  assert (config.n_critic, config.loss.penalty_weight, config.batch_size,
          config.dataset.resolution) == (5, 10.0, 64, 64)
  assert config.loss.penalty == 'wgan_gp' and config.model.d_norm == 'none'


def test_recipe_specifics():
  dcgan = _recipe('dcgan')
  assert dcgan.loss.name == 'non_saturating' and dcgan.loss.label_smoothing > 0
  assert (dcgan.optimizer.g_learning_rate, dcgan.optimizer.b1) == (2e-4, 0.5)
  assert _recipe('hinge_sn').model.spectral_norm
  assert _recipe('lsgan').loss.name == 'least_squares'
  assert _recipe('dragan').loss.penalty == 'dragan'
  budget = _recipe('celeba32_cpu')  # Issue 14: 30 minutes at 32x32.
  assert budget.dataset.resolution == 32 and 0 < budget.max_train_minutes <= 30
  assert budget.optimizer.schedule == 'constant'  # Stoppable at any time.
  long_budget = _recipe('celeba64_cpu')  # Issue 14: 2 hours at 64x64.
  assert long_budget.dataset.resolution == 64
  # The settings its figures were measured with, not the 32x32 recipe's.
  assert (long_budget.batch_size, long_budget.ema_decay) == (16, 0.9998)
  assert long_budget.optimizer.g_learning_rate == 2e-4
  assert (long_budget.model.g_width, long_budget.model.d_width) == (96, 48)
  assert 0 < long_budget.max_train_minutes <= 120
  assert long_budget.optimizer.schedule == 'constant'
  gpu = _recipe('celeba64')
  assert gpu.dataset.resolution == 64 and gpu.loss.path_length_weight > 0
  assert gpu.loss.penalty_weight == pytest.approx(0.0002 * 64 ** 2 / 64)


def test_argument_string():
  config = _recipe('wgan_gp', 'res=32,quick')
  assert config.dataset.resolution == 32
  base = _recipe("wgan_gp")
  assert config.model.g_width < base.model.g_width
  assert config.num_train_steps < base.num_train_steps
  # quick shrinks after the recipe: the recipe's loss settings stay.
  assert config.loss.penalty == 'wgan_gp'
  with pytest.raises(ValueError, match='valid arguments: res, quick'):
    _recipe('wgan_gp', 'resolution=32')
  with pytest.raises(ValueError, match='integer'):
    _recipe('wgan_gp', 'res=big')


@pytest.mark.parametrize('key,value,message', [
    ('loss.name', 'wgan', "loss.name='wgan' is not valid; choose one of"),
    ('loss.penalty', 'gp', 'wgan_gp'),
    ('optimizer.name', 'sgd', 'rmsprop'),
    ('optimizer.schedule', 'linear', 'cosine'),
    ('dtype', 'float16', 'bfloat16'),
    ('n_critic', 0, 'n_critic must be >= 1'),
    ('model.generator', 'stylegan', 'dcgan'),
    ('model.discriminator', 'vit', 'small_cnn'),
    ('dataset.resolution', 48, '48'),
    ('dataset.resolution', 512, '512'),
    ('loss.path_length_weight', 2.0, "generator='stylegan2'"),
    ('loss.path_length_every', 0, 'path_length_every must be an integer'),
    ('share_fakes', True, 'share_fakes=True needs n_critic=1'),
    ('ema_standing_stats', -1, 'ema_standing_stats must be an integer >= 0'),
    ('ema_warmup', 0.5, 'ema_warmup must be >= 1'),
    ('loss.top_k', 0.0, 'loss.top_k is the smallest fraction'),
    ('loss.top_k', 1.5, 'in \\(0, 1\\]'),
    ('loss.top_k_half_life', 0, 'top_k_half_life must be > 0'),
    ('loss.lecam_weight', -0.1, 'loss.lecam_weight must be >= 0'),
    ('loss.lecam_decay', 1.0, 'loss.lecam_decay is the decay'),
    ('loss.consistency_weight', -1.0, 'loss.consistency_weight must be >= 0'),
    ('optimizer.lookahead_every', -5, 'lookahead_every must be a whole number'),
    ('optimizer.lookahead_alpha', 0.0, 'lookahead_alpha must be in \\(0, 1\\]'),
])
def test_bad_values_are_refused_with_the_key_and_choices(key, value, message):
  config = _recipe('wgan_gp')
  section, _, leaf = key.rpartition('.')
  (config[section] if section else config)[leaf] = value
  with pytest.raises(ValueError, match=message):
    validate_config(config)


def test_consistency_augmentation_is_checked_when_it_is_used():
  config = _recipe('wgan_gp')
  config.loss.consistency_augment = 'rotate'
  validate_config(config)  # Off (weight 0): not read.
  config.loss.consistency_weight = 10.0
  with pytest.raises(ValueError, match='consistency_augment: Unknown .*rotate'):
    validate_config(config)
  config.loss.consistency_augment = ''
  with pytest.raises(ValueError, match='needs an augmentation'):
    validate_config(config)
  config.loss.consistency_augment = 'flip,translation'
  validate_config(config)


def test_batch_norm_critic_with_gradient_penalty_is_refused():
  config = _recipe('wgan_gp')
  config.model.d_norm = 'batch'
  with pytest.raises(ValueError, match='d_norm=.batch. cannot be used'):
    validate_config(config)
  config.loss.penalty = 'none'
  validate_config(config)  # without a penalty a batch-norm critic is fine


def test_bfloat16_matmul_inputs_train_on_the_fast_layers_only():
  config = _recipe('celeba32_cpu')
  assert config.model.matmul_inputs == 'bfloat16'
  validate_config(config)  # 'auto' picks the fast layers on CPU.
  config.model.conv_impl = 'xla'
  with pytest.raises(ValueError, match='set --config.model.matmul_inputs='):
    validate_config(config)
  config.model.matmul_inputs = 'float32'
  validate_config(config)


def test_standing_statistics_need_a_batch_norm_generator():
  config = _recipe('wgan_gp')
  config.ema_standing_stats = 8
  validate_config(config)  # DCGAN with batch norm: fine.
  config.dataset.attributes = 'Smiling'
  validate_config(config)  # Conditional too (labels drawn from the data's).
  config.model.g_norm = 'self_modulated'
  validate_config(config)  # Batch norm under the modulation.
  config.model.g_norm = 'none'
  with pytest.raises(ValueError, match='set --config.ema_standing_stats=0'):
    validate_config(config)


def test_packing_needs_a_divisible_batch_and_no_labels():
  config = _recipe('celeba32_cpu')
  config.model.d_pack = 2
  validate_config(config)  # Batch 16: eight packs of two.
  config.model.d_pack = 3
  with pytest.raises(ValueError, match='batch_size divisible by it'):
    validate_config(config)
  config.model.d_pack = 2
  config.dataset.attributes = 'Smiling'
  with pytest.raises(ValueError, match='set --config.model.d_pack=1'):
    validate_config(config)
  config.model.d_pack = 1
  validate_config(config)  # Unpacked, a conditional run is fine.


def _run_main(*args):
  return subprocess.run(
      [sys.executable, 'main.py', *args], cwd=REPO, capture_output=True,
      text=True, timeout=120)


def test_mistyped_override_fails_loudly_before_training(tmp_path):
  result = _run_main('--config=configs/wgan_gp.py', f'--workdir={tmp_path}',
                     '--config.optimizer.g_learnig_rate=0.1')
  assert result.returncode != 0
  assert 'g_learnig_rate' in result.stderr
  assert not os.listdir(tmp_path)  # nothing was started


def test_bad_value_on_command_line_names_the_key(tmp_path):
  result = _run_main('--config=configs/wgan_gp.py', f'--workdir={tmp_path}',
                     '--config.loss.name=wgan')
  assert result.returncode != 0
  assert "loss.name='wgan' is not valid" in result.stderr
