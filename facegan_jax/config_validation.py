"""Checks a run's config before anything is compiled.

Each error names the key, the bad value and what would be valid, so a typo on
the command line costs seconds, not a compilation.
"""

import jax
import ml_collections

from facegan_jax import diffaugment
from facegan_jax import losses
from facegan_jax import models
from facegan_jax import optimizers
from facegan_jax.models import normalization


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def _choice(key: str, value, valid) -> None:
  _require(value in valid,
           f'{key}={value!r} is not valid; choose one of: {", ".join(valid)}.')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for the first inconsistent key of `config`.

  The dataset keys are checked by `input_pipeline.validate_dataset_config`,
  which needs TensorFlow; this function does not.
  """
  _choice('loss.name', config.loss.name, losses.LOSSES)
  _choice('loss.penalty', config.loss.penalty, losses.PENALTIES)
  _choice('optimizer.name', config.optimizer.name, optimizers.OPTIMIZERS)
  _choice('optimizer.schedule', config.optimizer.schedule, optimizers.SCHEDULES)
  _choice('dtype', config.dtype, models.COMPUTE_DTYPES)
  for key in ('batch_size', 'n_critic', 'log_every', 'sample_every',
              'checkpoint_every', 'num_samples', 'keep_checkpoints'):
    _require(config[key] >= 1, f'{key} must be >= 1, got {config[key]}.')
  _require(config.max_train_minutes >= 0,
           f'max_train_minutes must be >= 0 (0 = no budget), got '
           f'{config.max_train_minutes}.')
  _require(config.num_train_steps >= 0,
           f'num_train_steps must be >= 0, got {config.num_train_steps}.')
  _require(0.0 <= config.ema_decay < 1.0,
           f'ema_decay must be in [0, 1), got {config.ema_decay}.')
  _require(config.ema_warmup >= 1.0,
           f'ema_warmup must be >= 1 (1 = no warm-up), got '
           f'{config.ema_warmup}.')
  _require(isinstance(config.ema_standing_stats, int) and
           config.ema_standing_stats >= 0,
           f'ema_standing_stats must be an integer >= 0 (batches; 0 = off), '
           f'got {config.ema_standing_stats!r}.')
  _require(not config.ema_standing_stats or
           config.model.g_norm in normalization.BATCH_STATISTICS_NORMS,
           f'ema_standing_stats={config.ema_standing_stats} recomputes a '
           f'batch-norm generator\'s statistics (got model.g_norm='
           f'{config.model.g_norm!r}): set --config.ema_standing_stats=0.')
  _require(isinstance(config.loss.r1_every, int) and config.loss.r1_every >= 1,
           f'loss.r1_every must be an integer >= 1, got '
           f'{config.loss.r1_every!r}.')
  _require(config.loss.path_length_weight >= 0,
           f'loss.path_length_weight must be >= 0 (0 = off), got '
           f'{config.loss.path_length_weight}.')
  _require(isinstance(config.loss.path_length_every, int) and
           config.loss.path_length_every >= 1,
           f'loss.path_length_every must be an integer >= 1, got '
           f'{config.loss.path_length_every!r}.')
  _require(not config.loss.path_length_weight or
           config.model.generator == 'stylegan2',
           f'loss.path_length_weight={config.loss.path_length_weight} needs a '
           f'generator with a w space: set model.generator=\'stylegan2\' or '
           f'loss.path_length_weight=0 (model.generator is '
           f'{config.model.generator!r}).')
  _require(not config.share_fakes or (config.n_critic == 1 and
                                      not config.loss.path_length_weight),
           f'share_fakes=True needs n_critic=1 and loss.path_length_weight=0 '
           f'(got n_critic={config.n_critic}, loss.path_length_weight='
           f'{config.loss.path_length_weight}): set --config.share_fakes=False '
           f'or change those keys.')
  _require(0.0 < config.loss.top_k <= 1.0,
           f'loss.top_k is the smallest fraction of the batch the generator '
           f'learns from, in (0, 1] (1 = off), got {config.loss.top_k}.')
  _require(config.loss.top_k_half_life > 0,
           f'loss.top_k_half_life must be > 0 generator updates, got '
           f'{config.loss.top_k_half_life}.')
  _require(config.loss.lecam_weight >= 0,
           f'loss.lecam_weight must be >= 0 (0 = off), got '
           f'{config.loss.lecam_weight}.')
  _require(0.0 < config.loss.lecam_decay < 1.0,
           f'loss.lecam_decay is the decay per critic update of LeCam\'s score '
           f'averages, in (0, 1), got {config.loss.lecam_decay}.')
  _require(config.loss.consistency_weight >= 0,
           f'loss.consistency_weight must be >= 0 (0 = off), got '
           f'{config.loss.consistency_weight}.')
  if config.loss.consistency_weight:
    try:
      names = diffaugment.parse_policy(config.loss.consistency_augment)
    except ValueError as error:
      raise ValueError(f'loss.consistency_augment: {error}') from None
    _require(names, 'loss.consistency_weight > 0 needs an augmentation to be '
             'consistent under: set loss.consistency_augment, e.g. '
             "'flip,translation'.")
  _require(0.0 <= config.loss.label_smoothing < 1.0,
           f'loss.label_smoothing must be in [0, 1), got '
           f'{config.loss.label_smoothing}.')
  pack = config.model.d_pack  # Its type and range: validate_model_config.
  _require(not isinstance(pack, int) or pack <= 1 or (
      config.batch_size % pack == 0 and not config.dataset.attributes),
           f'model.d_pack={pack} packs {pack} unlabeled samples per critic '
           f'input: it needs a batch_size divisible by it (got '
           f'{config.batch_size}) and no dataset.attributes (got '
           f'{config.dataset.attributes!r}); set --config.model.d_pack=1 '
           f'or change those keys.')
  for key in ('g_learning_rate', 'd_learning_rate'):
    _require(config.optimizer[key] > 0,
             f'optimizer.{key} must be > 0, got {config.optimizer[key]}.')
  every, alpha = (config.optimizer.lookahead_every,
                  config.optimizer.lookahead_alpha)
  _require(isinstance(every, int) and every >= 0,
           f'optimizer.lookahead_every must be a whole number of steps >= 0 '
           f'(0 = no Lookahead), got {every!r}.')
  _require(0 < alpha <= 1,
           f'optimizer.lookahead_alpha must be in (0, 1] (1 = no pull-back), '
           f'got {alpha}.')
  # A batch-norm critic mixes examples, so the per-example input gradient a
  # penalty needs is not defined: refuse instead of training on nonsense.
  _require(
      not (config.model.d_norm == 'batch' and config.loss.penalty != 'none'),
      f'model.d_norm=\'batch\' cannot be used with loss.penalty='
      f'{config.loss.penalty!r}: batch norm couples the examples and breaks '
      f'the per-example gradient penalty. Use --config.model.d_norm=layer (or '
      f'none), or --config.loss.penalty=none.')
  models.validate_model_config(config.model, config.dataset.resolution)
  conv_impl = models.resolve_conv_impl(config.model.conv_impl)
  _require(config.model.matmul_inputs == 'float32' or conv_impl == 'fast',
           f'model.matmul_inputs={config.model.matmul_inputs!r} is made fast '
           "by the CPU layers (model.conv_impl 'fast', which 'auto' picks on "
           f'CPU), not with conv_impl={config.model.conv_impl!r} on '
           f'{jax.default_backend()}: set --config.model.matmul_inputs='
           "float32 (--config.dtype=bfloat16 is the accelerators' mixed "
           'precision).')
