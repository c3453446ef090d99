"""Scoring a generator: samples, reference statistics, FID & co., provenance.

  program = train_step.build_program(config, mesh)
  extractor = metrics.feature_extractor(mesh)
  reference = dataset_reference(config, extractor, num_images=10_000)
  result = evaluate_state(config, program, state, extractor, reference,
                          num_samples=10_000, metrics=('fid', 'kid'))

`periodic_evaluation.PeriodicEvaluator` does this every `config.eval_every`
steps inside the training loop; `saved_run.restore_run` loads a run's config
and state for the command-line tool (`python -m facegan_jax.evaluate`).

Scores are repeatable: sample i always comes from the latent vector
normal(fold_in(PRNGKey(seed), i)), whatever the batch size or the number of
devices, and the reference images are the first N of a fixed-seed, un-augmented
stream of the dataset. TensorFlow is imported only when reference images must
be read (through `input_pipeline`), never on a reference-statistics cache hit
for the 'procedural' and 'folder' sources.
"""

from collections.abc import Iterator, Sequence
import dataclasses
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from facegan_jax import conditioning
from facegan_jax import latents as latents_lib
from facegan_jax import partitioning
from facegan_jax import metrics as metrics_lib
from facegan_jax import train_step as train_step_lib
from facegan_jax.metrics import inception

# Latents of evaluation samples: one stream for every run, so two runs (or two
# steps of one run) are scored on the same latent vectors.
EVAL_SEED = 0
# Data order of the reference images (a subset when N < the dataset's size).
REFERENCE_SEED = 0
SCORE_KEYS = ('fid', 'kid_mean', 'kid_std', 'is_mean', 'is_std', 'precision',
              'recall', 'num_real', 'num_fake')
# Names accepted on the command line and in config.eval_metrics -> the names
# of metrics.compute_all; which result keys each one fills.
METRIC_NAMES = {'fid': 'fid', 'kid': 'kid', 'is': 'is', 'pr': 'precision_recall',
                'precision_recall': 'precision_recall'}
METRIC_KEYS = {'fid': ('fid',), 'kid': ('kid_mean', 'kid_std'),
               'is': ('is_mean', 'is_std'),
               'precision_recall': ('precision', 'recall')}

def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
  """'fid,kid,is,pr' (or a sequence, or 'all') -> compute_all's names.

  Raises:
    ValueError: an unknown name; the message lists the valid ones.
  """
  names = spec.split(',') if isinstance(spec, str) else list(spec)
  names = [name.strip().lower() for name in names if name.strip()]
  if names == ['all']:
    return metrics_lib.ALL_METRICS
  unknown = [name for name in names if name not in METRIC_NAMES]
  if unknown or not names:
    raise ValueError(f'Unknown metrics {unknown or spec!r}; use a comma-'
                     'separated subset of fid,kid,is,pr (or all).')
  return tuple(dict.fromkeys(METRIC_NAMES[name] for name in names))


def mesh_of(program: train_step_lib.Program) -> Mesh:
  """The mesh the program's state lives on."""
  return jax.tree_util.tree_leaves(program.state_sharding)[0].mesh


# --- Generated images ---------------------------------------------------------


@jax.jit
def to_uint8(images, offset, scale):
  """Model outputs -> uint8 pixels, quantized as the feature extractor does."""
  pixels = images.astype(jnp.float32) / scale + offset  # Undo standardize.
  return inception.to_pixels((pixels - 127.5) / 127.5).astype(jnp.uint8)


def pixel_normalization(dataset_config) -> tuple[float, float]:
  """(offset, scale): model image = (pixel - offset) * scale, as in training."""
  if not dataset_config.standardize:
    return 127.5, 1 / 127.5
  # Standardized runs generate standardized images; the input pipeline owns
  # the statistics (this imports TensorFlow).
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  offset, scale = pipeline._normalization(dataset_config)  # pylint: disable=protected-access
  return np.asarray(offset, np.float32), np.asarray(scale, np.float32)


def generate_images(config: ml_collections.ConfigDict,
                    program: train_step_lib.Program, state: Any,
                    num_samples: int, batch_size: int, seed: int = EVAL_SEED,
                    use_ema: bool = True, truncation: float = 1.0,
                    label_bank: np.ndarray | None = None
                    ) -> Iterator[np.ndarray]:
  """This process's share of `num_samples` generated images, batch by batch.

  Sample i comes from z_i = normal(fold_in(PRNGKey(seed), i)) (and for a
  conditional run, labels drawn from `label_bank` by (seed, i)), so the set
  of images does not depend on batch_size or the device or process count. Each
  global batch is generated on the device (one compilation: every batch has
  the same size, the last is trimmed on the host); process p keeps its slice.

  Args:
    config: the run's config (latent size, dataset normalization).
    program: from `train_step.build_program`.
    state: a TrainState on the program's shardings.
    num_samples: images over all processes; a multiple of the process count.
    batch_size: images generated per call over all processes; rounded up to
      a multiple of the process count.
    seed: the latent stream.
    use_ema: the EMA generator (else the raw one).
    truncation: psi of the truncation trick, 0 < psi <= 1 (1 = none; see
      `train_step.make_sample_fn`).
    label_bank: a conditional run's real label vectors [M, A]
      (conditioning.load_label_bank); required exactly when it is one.

  Yields:
    uint8 [b, H, W, 3] batches: b = batch_size / process_count but the last.
  """
  num_processes, process = jax.process_count(), jax.process_index()
  if num_samples % num_processes:
    raise ValueError(f'num_samples={num_samples} must be a multiple of the '
                     f'process count ({num_processes}).')
  batch_size = -(-batch_size // num_processes) * num_processes
  latents_lib.check_truncation(truncation)
  if bool(program.attributes) != (label_bank is not None):
    raise ValueError('A conditional run is sampled with its label bank, an '
                     'unconditional one without (conditioning.load_label_bank).')
  labels = None
  if label_bank is not None:
    labels = conditioning.draw_labels(
        label_bank, seed, -(-num_samples // batch_size) * batch_size)
  draw = latents_lib.stream_fn(mesh_of(program), batch_size,
                               config.model.latent_dim)
  offset, scale = pixel_normalization(config.dataset)
  params, g_stats = state.generator_variables(use_ema)
  key = jax.random.PRNGKey(seed)
  for start in range(0, num_samples, batch_size):
    batch_labels = None if labels is None else jax.device_put(
        labels[start:start + batch_size], partitioning.replicated(
            mesh_of(program)))
    images = to_uint8(program.sample(params, g_stats, draw(key, start),
                                     truncation, batch_labels), offset, scale)
    images = np.asarray(images)[:num_samples - start]
    share = images.shape[0] // num_processes
    yield images[process * share:(process + 1) * share]


# --- Reference statistics -------------------------------------------------------


def dataset_description(dataset_config: ml_collections.ConfigDict,
                        num_images: int | None = None) -> dict[str, Any]:
  """What identifies the reference images of `dataset_config` (json-able).

  Args:
    dataset_config: the config's `dataset` block.
    num_images: reference images wanted; the process count is part of the
      description when they are a subset (each process draws its own part).
  """
  d = dataset_config
  description = {'source': d.source, 'resolution': d.resolution,
                 'reference_seed': REFERENCE_SEED}
  if d.source == 'procedural':
    description['num_images'] = d.num_images
  elif d.source == 'folder':
    from input_pipeline import prepare  # pylint: disable=g-import-not-at-top
    manifest = prepare.read_manifest(d.path)
    description.update(
        path=os.path.abspath(os.path.expanduser(d.path)),
        source_fingerprint=manifest['source']['fingerprint'],
        prepared_resolution=manifest['resolution'], crop=manifest['crop'],
        filter=manifest.get('filter'), num_images=manifest['written'])
  else:
    description.update(name=d.name, split=d.split, image_key=d.image_key,
                       crop=d.crop)
  total = description.get('num_images')
  if num_images is not None and (total is None or num_images < total):
    # Which images form a subset depends on how the stream is split and
    # shuffled ('procedural' always shuffles fully).
    description['process_count'] = jax.process_count()
    if d.source != 'procedural':
      description['shuffle_buffer'] = d.shuffle_buffer
  return description


def _dataset_size(dataset_config: ml_collections.ConfigDict,
                  description: dict[str, Any]) -> int:
  if 'num_images' in description:
    return description['num_images']
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.create_source(dataset_config).num_examples


def _resize_method(description: dict[str, Any]) -> str:
  if description['source'] == 'procedural':
    return 'procedural: rendered at the resolution'
  if description['source'] == 'folder':
    method = f'PIL {description["filter"]} (input_pipeline.prepare)'
    if description['prepared_resolution'] != description['resolution']:
      method += ', then tf.image.resize area'
    return method
  return (f'tf.image.resize bilinear antialias after crop '
          f'{description["crop"]!r}')


def _unaugmented(dataset_config: ml_collections.ConfigDict
                 ) -> ml_collections.ConfigDict:
  """A copy of the dataset block that yields the images as they are."""
  plain = ml_collections.ConfigDict(dataset_config.to_dict())
  plain.random_flip = plain.vertical_flip = plain.standardize = False
  plain.translate = plain.rotate = 0.0
  plain.diffaugment = ''
  return plain


def dataset_reference(config: ml_collections.ConfigDict,
                      extractor: metrics_lib.FeatureExtractor,
                      num_images: int,
                      cache_dir: str | os.PathLike | None = None,
                      batch_size: int | None = None,
                      progress: bool = True) -> metrics_lib.ReferenceStatistics:
  """Reference statistics of `config.dataset`, computed once and cached.

  The images are the first `num_images` (capped by the dataset's size) of
  the dataset's stream with seed REFERENCE_SEED and every augmentation off.

  Args:
    config: the run's config.
    extractor: from `metrics.feature_extractor`.
    num_images: reference images over all processes.
    cache_dir: statistics cache (default $FACEGAN_CACHE, ~/.cache/facegan_jax).
    batch_size: images per Inception call over all processes (default
      config's eval_batch_size).
    progress: progress line on stderr.

  Returns:
    The statistics; `info` holds their provenance and, under 'dataset', the
    description the fingerprint hashes.
  """
  dataset_config = config.dataset
  description = dataset_description(dataset_config, num_images)
  num_processes = jax.process_count()
  size = _dataset_size(dataset_config, description)
  # Every process must contribute equally many images (and never wrap around
  # into a second epoch of its part).
  num_images = min(num_images, size) // num_processes * num_processes
  if num_images < 2:
    raise ValueError(f'The dataset has {size} images; FID needs at least 2 '
                     'reference images.')
  batch_size = batch_size or config.eval_batch_size
  local_batch = max(1, batch_size // num_processes)

  def batches():
    import input_pipeline  # pylint: disable=g-import-not-at-top
    dataset = input_pipeline.create_dataset(
        _unaugmented(dataset_config), local_batch_size=local_batch,
        seed=REFERENCE_SEED, process_index=jax.process_index(),
        process_count=num_processes)
    for batch in dataset.as_numpy_iterator():
      # [-1, 1] floats of uint8 pixels -> the same pixels, a quarter the bytes.
      yield np.clip(np.floor(batch['image'] * 127.5 + 128.0), 0,
                    255).astype(np.uint8)

  stats = metrics_lib.reference_statistics(
      batches, extractor=extractor,
      fingerprint=metrics_lib.dataset_fingerprint(description),
      num_images=num_images, resolution=dataset_config.resolution,
      resize_method=_resize_method(description), cache_dir=cache_dir or None,
      progress=progress)
  return dataclasses.replace(stats, info=dict(stats.info, dataset=description))


# --- Scores ---------------------------------------------------------------------


def scores_provenance(extractor: metrics_lib.FeatureExtractor,
                      reference: metrics_lib.ReferenceStatistics | None = None
                      ) -> dict[str, Any]:
  """The extractor's provenance plus the reference's identity."""
  result = dict(extractor.provenance())
  if reference is not None:
    info = reference.info
    result.update(dataset_fingerprint=info.get('dataset_fingerprint'),
                  reference_sha256=info.get('npz_sha256'),
                  reference_resize_method=info.get('resize_method'),
                  dataset=info.get('dataset'))
  return result


def evaluate_state(config: ml_collections.ConfigDict,
                   program: train_step_lib.Program, state: Any,
                   extractor: metrics_lib.FeatureExtractor,
                   reference: metrics_lib.ReferenceStatistics,
                   num_samples: int,
                   metrics: Sequence[str] = metrics_lib.ALL_METRICS, *,
                   batch_size: int | None = None, seed: int = EVAL_SEED,
                   use_ema: bool = True,
                   progress: bool = True,
                   label_bank: np.ndarray | None = None) -> dict[str, Any]:
  """Scores the generator of `state` against `reference`.

  Args:
    config: the run's config.
    program: from `train_step.build_program`.
    state: a TrainState on the program's shardings.
    extractor: from `metrics.feature_extractor`.
    reference: from `dataset_reference` (or `metrics.reference_statistics`).
    num_samples: generated images (over all processes).
    metrics: subset of metrics.ALL_METRICS (or names for `parse_metrics`);
      the others are NaN, as in `metrics.compute_all`.
    batch_size: images per generator/Inception call (default the config's
      eval_batch_size).
    seed: latent stream (see `generate_images`).
    use_ema: score the EMA generator (else the raw one).
    progress: progress line on stderr.
    label_bank: a conditional run's label vectors (see `generate_images`).

  Returns:
    SCORE_KEYS as floats (NaN where not computed) and the provenance:
    weights sha256/source, resize, input size, package version, dataset
    fingerprint and description, metrics, seed, use_ema, step.
  """
  metrics = parse_metrics(metrics)
  batch_size = batch_size or config.eval_batch_size
  started = time.perf_counter()
  fake_features, fake_logits = metrics_lib.extract_features(
      extractor,
      generate_images(config, program, state, num_samples, batch_size, seed,
                      use_ema, label_bank=label_bank),
      num_images=num_samples // jax.process_count(), progress=progress,
      description='Generated images')
  scores = metrics_lib.compute_all(reference, fake_features, None, fake_logits,
                                   metrics=metrics)
  return dict(scores, **scores_provenance(extractor, reference),
              metrics=list(metrics), sample_seed=seed, use_ema=use_ema,
              step=int(state.step),
              eval_seconds=round(time.perf_counter() - started, 3))


def json_ready(value: Any) -> Any:
  """NaN/Inf -> None and numpy scalars -> Python, recursively (valid JSON)."""
  if isinstance(value, dict):
    return {str(k): json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_ready(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value
