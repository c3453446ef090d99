"""Where examples come from: one class per `dataset.source`.

A source serves this process's disjoint part of the data through four
members, which pipeline.py turns into the shuffled, resumable stream:

  num_examples: examples this process owns (one epoch).
  records(seed): tf.data.Dataset of those examples in a base order (which
    may depend on the [2] int64 `seed`, e.g. a per-epoch file order), cheap
    to skip: indices or undecoded bytes.
  shuffle_window(shuffle_buffer): how many records the stream permutes at a
    time.
  images(records, batch_size): batches of decoded images, uint8
    [B, R, R, 3] (drop_remainder); with `attributes` (folder, tfds), pairs
    (images, labels int32 [B, A] of 0/1 in the order asked for).
  available_attributes: the attribute names the source could label with.

Per-process parts: index ranges for 'procedural', record ranges over the
shards (from the manifest's counts) for 'folder', and
`tfds.split_for_jax_process` for 'tfds'. All are even splits: process p
gets [N * p // P, N * (p + 1) // P), so the union is the whole dataset.
"""

import functools
import os

import tensorflow as tf

from input_pipeline import crops
from input_pipeline import prepare
from input_pipeline import procedural

_AUTOTUNE = tf.data.AUTOTUNE
_PHILOX = tf.random.Algorithm.PHILOX
# The faces of 'procedural' do not depend on the training seed, so every run
# (and every FID reference) sees the same dataset.
FACES_SEED = 0
# Bound on the memory the drawn faces of one process may take.
_MAX_FACES_BYTES = 4 << 30
# Bound on the bytes of undecoded records one shuffle window holds.
_WINDOW_BYTES = 512 << 20
# Shards read at once: more mixes the base order better, costs file buffers.
_CYCLE_LENGTH = 8


def even_range(total: int, process_index: int,
               process_count: int) -> tuple[int, int]:
  """[start, stop) of process `process_index`'s share of `total` items."""
  return (total * process_index // process_count,
          total * (process_index + 1) // process_count)


def _permutation(size, seed):
  return tf.random.experimental.stateless_shuffle(
      tf.range(size), seed=seed, alg=_PHILOX)


class ProceduralSource:
  """The built-in faces: example i is `procedural.render_faces([i])`.

  They carry no attribute labels.

  This process's faces are drawn once, up front, into memory, and served by
  tf.gather: drawing them inside tf.data would need a Python callback
  (tf.numpy_function), and TensorFlow can hang at interpreter exit when such
  a callback runs while a live iterator is torn down.
  """

  def __init__(self, num_images: int, resolution: int, process_index: int,
               process_count: int):
    self.start, self.stop = even_range(num_images, process_index,
                                       process_count)
    self.num_examples = self.stop - self.start
    self.resolution = resolution
    self.available_attributes = ()
    size = self.num_examples * 3 * resolution**2
    if size > _MAX_FACES_BYTES:
      raise ValueError(
          f'{self.num_examples} procedural faces at {resolution}x{resolution} '
          f'need {size / 2**30:.1f} GiB of memory (limit '
          f'{_MAX_FACES_BYTES / 2**30:.0f} GiB): lower dataset.num_images to '
          f'{_MAX_FACES_BYTES // (3 * resolution**2)} or fewer.')
    self._faces = None

  def records(self, seed: tf.Tensor) -> tf.data.Dataset:
    del seed  # Indices need no base order; the window shuffle permutes them.
    return tf.data.Dataset.range(self.start, self.stop)

  def shuffle_window(self, shuffle_buffer: int) -> int:
    del shuffle_buffer  # Indices are 8 bytes: always a full shuffle.
    return self.num_examples

  def images(self, records: tf.data.Dataset,
             batch_size: int) -> tf.data.Dataset:
    if self._faces is None:
      self._faces = tf.constant(procedural.render_faces(
          range(self.start, self.stop), self.resolution, FACES_SEED,
          workers=os.cpu_count() or 1))
    faces, start = self._faces, self.start
    return records.batch(batch_size, drop_remainder=True).map(
        lambda indices: tf.gather(faces, indices - start),
        num_parallel_calls=_AUTOTUNE, deterministic=True)


class FolderSource:
  """A folder written by `python -m input_pipeline.prepare`.

  `attributes`: names from the manifest's 'attributes' (a folder prepared
  with --labels) whose labels come with the images.
  """

  def __init__(self, path: str, resolution: int, process_index: int,
               process_count: int, attributes: tuple[str, ...] = ()):
    path = os.path.expanduser(path)
    manifest = prepare.read_manifest(path)
    self.stored_resolution = manifest['resolution']
    self.resolution = resolution
    self.available_attributes = tuple(manifest.get('attributes', ()))
    self._label_columns = [self.available_attributes.index(name)
                           for name in attributes]
    start, stop = even_range(manifest['written'], process_index, process_count)
    self.num_examples = stop - start
    # This process's records as (file, records to skip, records to take)
    # pieces of the shards that overlap [start, stop).
    self._pieces = []
    first = 0
    for shard in manifest['shards']:
      low, high = max(start, first), min(stop, first + shard['count'])
      if low < high:
        self._pieces.append(
            (os.path.join(path, shard['file']), low - first, high - low))
      first += shard['count']

  def records(self, seed: tf.Tensor) -> tf.data.Dataset:
    files, skips, takes = zip(*self._pieces)
    order = _permutation(len(files), seed)
    pieces = tf.data.Dataset.from_tensor_slices((
        tf.gather(tf.constant(files), order),
        tf.gather(tf.constant(skips, tf.int64), order),
        tf.gather(tf.constant(takes, tf.int64), order)))
    return pieces.interleave(
        lambda file, skip, take: tf.data.TFRecordDataset(file).skip(
            skip).take(take),
        cycle_length=min(len(files), _CYCLE_LENGTH), block_length=1)

  def shuffle_window(self, shuffle_buffer: int) -> int:
    record_bytes = 3 * self.stored_resolution**2
    return max(1, min(shuffle_buffer, self.num_examples,
                      _WINDOW_BYTES // record_bytes))

  def images(self, records: tf.data.Dataset,
             batch_size: int) -> tf.data.Dataset:
    stored, size = self.stored_resolution, self.resolution
    spec = {'image': tf.io.FixedLenFeature([], tf.string)}
    columns = self._label_columns
    if columns:
      spec['labels'] = tf.io.FixedLenFeature(
          [len(self.available_attributes)], tf.int64)

    def decode(serialized):
      features = tf.io.parse_example(serialized, spec)
      pixels = tf.io.decode_raw(features['image'], tf.uint8)
      images = tf.reshape(pixels, [batch_size, stored, stored, 3])
      if stored != size:
        images = _to_uint8(tf.image.resize(images, [size, size], 'area'))
      if columns:
        return images, tf.cast(tf.gather(features['labels'], columns, axis=1),
                               tf.int32)
      return images

    return records.batch(batch_size, drop_remainder=True).map(
        decode, num_parallel_calls=_AUTOTUNE, deterministic=True)


def _to_uint8(images: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)


def tfds_builder(name: str, data_dir: str, split: str, image_key: str):
  """The TFDS builder, or a ValueError saying how to get the data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ValueError(f'dataset.name={name!r} is not a TFDS dataset: '
                     f'{str(error).splitlines()[0]}') from None
  if image_key not in builder.info.features:
    raise ValueError(
        f'dataset.image_key={image_key!r} is not a feature of TFDS dataset '
        f'{name!r}; its features: {", ".join(builder.info.features)}.')
  try:
    builder.as_dataset(split=split, shuffle_files=False)
  except AssertionError:
    where = data_dir or '~/tensorflow_datasets'
    raise ValueError(
        f'TFDS dataset {name!r} is not prepared in {where}. Download and '
        f'prepare it once with\n  tfds build {name} --data_dir={where}\n'
        f'(datasets that cannot be downloaded automatically say where to '
        f'place the files: put them in {where}/downloads/manual/ or pass '
        f'--manual_dir=DIR), or set dataset.data_dir to where it is '
        f'prepared.') from None
  except (KeyError, ValueError) as error:
    raise ValueError(f'dataset.split={split!r} is not valid for {name!r}: '
                     f'{error}') from None
  return builder


class TfdsSource:
  """Any TFDS dataset with an image feature.

  `attributes`: names of the boolean features under its 'attributes'
  (celeb_a's 40) whose labels come with the images.
  """

  def __init__(self, name: str, data_dir: str, split: str, image_key: str,
               crop: str, resolution: int, process_index: int,
               process_count: int, attributes: tuple[str, ...] = ()):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds_builder(name, data_dir, split, image_key)
    local_split = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count)
    # Images stay encoded until after the skip of a resume.
    examples = builder.as_dataset(
        split=local_split, shuffle_files=False,
        decoders={image_key: tfds.decode.SkipDecoding()})
    self.available_attributes = tfds_attributes(builder)
    self._with_labels = bool(attributes)

    def record(example):
      if not attributes:
        return example[image_key]
      return example[image_key], tf.stack(
          [tf.cast(example['attributes'][name], tf.int32)
           for name in attributes])

    self._encoded = examples.map(record)
    if builder.info.splits:
      self.num_examples = builder.info.splits[local_split].num_examples
    else:
      # No split metadata (tfds.testing.mock_data): count once.
      self.num_examples = int(self._encoded.reduce(0, lambda n, *_: n + 1))
    self.crop, self.resolution = crop, resolution

  def records(self, seed: tf.Tensor) -> tf.data.Dataset:
    del seed  # TFDS fixes the file order; the window shuffle mixes.
    return self._encoded

  def shuffle_window(self, shuffle_buffer: int) -> int:
    return max(1, min(shuffle_buffer, self.num_examples))

  def images(self, records: tf.data.Dataset,
             batch_size: int) -> tf.data.Dataset:
    decode_image = functools.partial(decode_and_crop, crop=self.crop,
                                     resolution=self.resolution)

    def decode(encoded, labels=None):
      images = decode_image(encoded)
      return images if labels is None else (images, labels)

    return records.map(decode, num_parallel_calls=_AUTOTUNE,
                       deterministic=True).batch(batch_size,
                                                 drop_remainder=True)


def tfds_attributes(builder) -> tuple[str, ...]:
  """The names under a TFDS dataset's 'attributes' feature (celeb_a's 40)."""
  features = builder.info.features
  if 'attributes' not in features:
    return ()
  return tuple(features['attributes'].keys())


def decode_and_crop(encoded: tf.Tensor, crop: str,
                    resolution: int) -> tf.Tensor:
  """Encoded image bytes -> cropped, resized uint8 [R, R, 3] RGB."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  top, left, box_height, box_width = crops.crop_box(
      height, width, crop, minimum=tf.minimum)
  box_height = tf.cast(tf.round(box_height), tf.int32)
  box_width = tf.cast(tf.round(box_width), tf.int32)
  top = tf.clip_by_value(tf.cast(tf.round(top), tf.int32), 0,
                         tf.shape(image)[0] - box_height)
  left = tf.clip_by_value(tf.cast(tf.round(left), tf.int32), 0,
                          tf.shape(image)[1] - box_width)
  image = tf.image.crop_to_bounding_box(image, top, left, box_height,
                                        box_width)
  image = tf.image.resize(image, [resolution, resolution], 'bilinear',
                          antialias=True)
  return _to_uint8(image)
