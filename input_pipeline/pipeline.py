"""create_dataset: the shuffled, augmented, exactly resumable batch stream.

The stream of one process is a function of (seed, process_index,
process_count, local batch size) and nothing else:

  position p = epoch * N + i        (N: examples this process owns)
  record at p = window-shuffled base order of epoch `epoch`, item i
  batch b = records [b * B, (b + 1) * B), augmented with key (seed, b)

Epoch e's order permutes consecutive windows of W records, each with
stateless_shuffle keyed on (seed, e, window); W = N for 'procedural' (a full
shuffle), the shuffle buffer (bounded in bytes) otherwise. Because every
random choice is keyed on a position, resuming at batch k starts at epoch
p // N, skips whole windows and then records, all before any image is
decoded or rendered, and yields exactly what the uninterrupted stream
would have.
"""

import ml_collections
import numpy as np
import tensorflow as tf

from facegan_jax import conditioning
from facegan_jax import diffaugment
from facegan_jax import models
from input_pipeline import augment
from input_pipeline import crops
from input_pipeline import prepare
from input_pipeline import prepared_arrays
from input_pipeline import procedural
from input_pipeline import sources

SOURCES = ('procedural', 'folder', 'tfds')
_PHILOX = tf.random.Algorithm.PHILOX
_FOREVER = 1 << 62
# Images dataset.standardize measures when no manifest holds the statistics.
_STATS_IMAGES = 256


def validate_dataset_config(dataset_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError, saying what to do, for an unusable `dataset` config.

  Cheap (reads at most a manifest or TFDS metadata) and compiles nothing.
  """
  source, resolution = dataset_config.source, dataset_config.resolution
  if source not in SOURCES:
    raise ValueError(f'dataset.source={source!r} is not valid; choose one '
                     f'of: {", ".join(SOURCES)}.')
  if not isinstance(resolution, int) or resolution not in models.RESOLUTIONS:
    raise ValueError(
        f'dataset.resolution={resolution!r} is not valid; use a power of two '
        f'from {models.MIN_RESOLUTION} to {models.MAX_RESOLUTION} '
        f'({", ".join(map(str, models.RESOLUTIONS))}).')
  if dataset_config.shuffle_buffer < 1:
    raise ValueError(f'dataset.shuffle_buffer must be >= 1, got '
                     f'{dataset_config.shuffle_buffer}.')
  if not 0 <= dataset_config.translate < 0.5:
    raise ValueError(f'dataset.translate must be in [0, 0.5) (a fraction of '
                     f'the image side), got {dataset_config.translate}.')
  if not 0 <= dataset_config.rotate <= 180:
    raise ValueError(f'dataset.rotate must be in [0, 180] degrees, got '
                     f'{dataset_config.rotate}.')
  diffaugment.parse_policy(dataset_config.diffaugment)
  if source == 'procedural' and dataset_config.num_images < 1:
    raise ValueError(f'dataset.num_images must be >= 1, got '
                     f'{dataset_config.num_images}.')
  if source == 'folder':
    _validate_folder(dataset_config.path, resolution)
  if source == 'tfds':
    if dataset_config.crop not in crops.CROPS:
      raise ValueError(f'dataset.crop={dataset_config.crop!r} is not valid; '
                       f'choose one of: {", ".join(crops.CROPS)}.')
    sources.tfds_builder(dataset_config.name, dataset_config.data_dir,
                         dataset_config.split, dataset_config.image_key)
  resolve_attributes(dataset_config)


def available_attributes(dataset_config: ml_collections.ConfigDict
                         ) -> tuple[str, ...]:
  """The attribute names the configured dataset has labels for."""
  if dataset_config.source == 'folder':
    return tuple(prepare.read_manifest(dataset_config.path).get(
        'attributes', ()))
  if dataset_config.source == 'tfds':
    return sources.tfds_attributes(sources.tfds_builder(
        dataset_config.name, dataset_config.data_dir, dataset_config.split,
        dataset_config.image_key))
  return ()


def resolve_attributes(dataset_config: ml_collections.ConfigDict
                       ) -> tuple[str, ...]:
  """`dataset.attributes` as names ('all' expanded), checked against the
  data; ValueError listing the valid names otherwise."""
  if not dataset_config.attributes.strip():
    return ()
  return conditioning.parse_attributes(dataset_config.attributes,
                                       available_attributes(dataset_config))


def _validate_folder(path: str, resolution: int) -> None:
  if not path:
    raise ValueError(
        "dataset.source='folder' needs dataset.path, a folder made by\n"
        '  python -m input_pipeline.prepare --src=IMAGES_DIR --out=OUT_DIR '
        f'--resolution={resolution}\n(then --config.dataset.path=OUT_DIR).')
  manifest = prepare.read_manifest(path)
  if manifest['written'] < 1:
    raise ValueError(f'{path} holds no images (the dataset tool skipped every '
                     f'file; see skipped_files in its manifest.json).')
  if manifest['resolution'] < resolution:
    raise ValueError(
        f'{path} was prepared at {manifest["resolution"]}x'
        f'{manifest["resolution"]}, smaller than dataset.resolution='
        f'{resolution}: prepare it again with --resolution={resolution}.')


def all_labels(dataset_config: ml_collections.ConfigDict) -> np.ndarray:
  """Every example's labels of dataset.attributes, int32 [N, A] (all
  processes' examples; images are not decoded)."""
  names = resolve_attributes(dataset_config)
  if dataset_config.source == 'folder':
    labels = prepared_arrays.read_prepared(dataset_config.path,
                                           with_images=False)[1]
    available = prepared_arrays.attribute_names(dataset_config.path)
    return labels[:, [available.index(name) for name in names]]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = sources.tfds_builder(dataset_config.name, dataset_config.data_dir,
                                 dataset_config.split, dataset_config.image_key)
  examples = builder.as_dataset(
      split=dataset_config.split, shuffle_files=False,
      decoders={dataset_config.image_key: tfds.decode.SkipDecoding()})
  rows = examples.map(lambda example: tf.stack(
      [tf.cast(example['attributes'][name], tf.int32) for name in names]))
  return np.concatenate(list(rows.batch(4096).as_numpy_iterator()))


def create_source(dataset_config: ml_collections.ConfigDict,
                  process_index: int = 0, process_count: int = 1):
  """The source object (see sources.py) for this process's part."""
  resolution = dataset_config.resolution
  attributes = resolve_attributes(dataset_config)
  if dataset_config.source == 'procedural':
    return sources.ProceduralSource(dataset_config.num_images, resolution,
                                    process_index, process_count)
  if dataset_config.source == 'folder':
    return sources.FolderSource(dataset_config.path, resolution,
                                process_index, process_count, attributes)
  if dataset_config.source == 'tfds':
    return sources.TfdsSource(
        dataset_config.name, dataset_config.data_dir, dataset_config.split,
        dataset_config.image_key, dataset_config.crop, resolution,
        process_index, process_count, attributes)
  raise ValueError(f'dataset.source={dataset_config.source!r} is not valid; '
                   f'choose one of: {", ".join(SOURCES)}.')


def _stream_seed(seed: int, process_index: int, purpose: int) -> tf.Tensor:
  """A [2] int64 key for one process and one use of randomness."""
  return tf.constant([seed, process_index * 16 + purpose], tf.int64)


def _count_from(start) -> tf.data.Dataset:
  """start, start + 1, ... without end (tf.data.Dataset.counter runs a scan
  function per element; a range is a plain counter)."""
  return tf.data.Dataset.range(start, _FOREVER)


def shuffled_records(source, seed: tf.Tensor, shuffle_buffer: int,
                     start_position: int = 0) -> tf.data.Dataset:
  """The infinite, epoch-by-epoch shuffled stream of `source.records`.

  Args:
    source: see sources.py.
    seed: [2] int64 key of the stream.
    shuffle_buffer: records per shuffle window (the source may bound it).
    start_position: records of the stream to leave out (a resume); skipped
      as whole epochs, then whole windows, then records, none decoded.

  Returns:
    Infinite dataset of records; element p is the same for every
    start_position <= p.
  """
  count = source.num_examples
  window = source.shuffle_window(shuffle_buffer)
  first_epoch, first_offset = divmod(start_position, count)

  def epoch_records(epoch):
    epoch_seed = tf.random.experimental.stateless_fold_in(seed, epoch,
                                                          alg=_PHILOX)
    offset = tf.where(epoch == first_epoch, tf.constant(first_offset, tf.int64),
                      tf.constant(0, tf.int64))
    first_window = offset // window
    records = source.records(epoch_seed).skip(first_window * window)
    windows = tf.data.Dataset.zip(
        _count_from(first_window), records.batch(window))

    def permute(window_index, batch):
      window_seed = tf.random.experimental.stateless_fold_in(
          epoch_seed, window_index, alg=_PHILOX)
      size = tf.shape(tf.nest.flatten(batch)[0])[0]
      order = tf.random.experimental.stateless_shuffle(
          tf.range(size), seed=window_seed, alg=_PHILOX)
      return tf.nest.map_structure(lambda t: tf.gather(t, order), batch)

    return windows.map(permute).unbatch().skip(offset - first_window * window)

  return _count_from(first_epoch).flat_map(epoch_records)


def create_dataset(dataset_config: ml_collections.ConfigDict, *,
                   local_batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1,
                   start_batch: int = 0) -> tf.data.Dataset:
  """This process's infinite stream of training batches.

  Args:
    dataset_config: the config's `dataset` block.
    local_batch_size: images per batch on this process, B.
    seed: seeds the data order and augmentation (not the data itself).
    process_index: this process, in [0, process_count).
    process_count: processes that split the data between them.
    start_batch: batches this process already consumed; the stream starts
      where the uninterrupted one would be after them.

  Returns:
    Infinite dataset of {'image': float32 [B, R, R, 3]}, in [-1, 1] (or
    standardized per channel with dataset.standardize), and with
    dataset.attributes 'labels': float32 [B, A] of 0/1 in their order;
    identical for identical arguments.

  Raises:
    ValueError: the config is unusable, or this process owns no examples.
  """
  validate_dataset_config(dataset_config)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in [0, '
                     f'{process_count}).')
  if local_batch_size < 1 or start_batch < 0:
    raise ValueError(f'local_batch_size={local_batch_size} must be >= 1 and '
                     f'start_batch={start_batch} >= 0.')
  source = create_source(dataset_config, process_index, process_count)
  if source.num_examples < 1:
    raise ValueError(
        f'Process {process_index} of {process_count} gets no examples: the '
        f'dataset is smaller than the number of processes.')
  records = shuffled_records(
      source, _stream_seed(seed, process_index, purpose=0),
      dataset_config.shuffle_buffer, start_batch * local_batch_size)
  batches = source.images(records, local_batch_size)
  augment_seed = _stream_seed(seed, process_index, purpose=1)
  flips_or_moves = dict(
      random_flip=dataset_config.random_flip,
      vertical_flip=dataset_config.vertical_flip,
      translate=dataset_config.translate, rotate=dataset_config.rotate)
  offset, scale = _normalization(dataset_config)

  def finish(batch_index, images, labels=None):
    if any(flips_or_moves.values()):
      key = tf.random.experimental.stateless_fold_in(augment_seed, batch_index,
                                                     alg=_PHILOX)
      images = augment.augment_batch(images, key, **flips_or_moves)
    batch = {'image': (tf.cast(images, tf.float32) - offset) * scale}
    if labels is not None:
      batch['labels'] = tf.cast(labels, tf.float32)
    return batch

  dataset = tf.data.Dataset.zip(_count_from(start_batch), batches)
  if isinstance(dataset.element_spec[1], tuple):  # (images, labels)
    dataset = dataset.map(lambda index, pair: (index, *pair))
  dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _normalization(
    dataset_config: ml_collections.ConfigDict) -> tuple[tf.Tensor, tf.Tensor]:
  """(offset, scale) such that (pixel - offset) * scale is the model input.

  [-1, 1] by default; with dataset.standardize, zero mean and unit variance
  per channel over the whole dataset (the manifest's statistics for
  'folder'; measured on the first images of the whole dataset otherwise, so
  every process uses the same numbers).
  """
  if not dataset_config.standardize:
    return tf.constant(127.5), tf.constant(1 / 127.5)
  if dataset_config.source == 'folder':
    manifest = prepare.read_manifest(dataset_config.path)
    mean, std = manifest['channel_mean'], manifest['channel_std']
  else:
    mean, std = _measure_statistics(dataset_config)
  mean = tf.constant(mean, tf.float32) * 255
  std = tf.maximum(tf.constant(std, tf.float32) * 255, 1e-3)
  return mean, 1 / std


def _measure_statistics(dataset_config: ml_collections.ConfigDict):
  """Per-channel mean and std in [0, 1] of the dataset's first images."""
  if dataset_config.source == 'procedural':
    size = min(_STATS_IMAGES, dataset_config.num_images)
    images = procedural.render_faces(range(size), dataset_config.resolution,
                                     sources.FACES_SEED)
  else:
    source = create_source(dataset_config)
    size = min(_STATS_IMAGES, source.num_examples)
    images = next(source.images(source.records(tf.constant([0, 0], tf.int64)),
                                size).as_numpy_iterator())
    if isinstance(images, tuple):  # (images, labels)
      images = images[0]
  pixels = images.reshape(-1, 3) / 255
  return pixels.mean(0).tolist(), pixels.std(0).tolist()
