"""create_dataset: sources, determinism, exact resume, per-process parts,
augmentation, validation; and the on-device diff_augment."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import default
import input_pipeline
from facegan_jax import diffaugment
from input_pipeline import prepare
from input_pipeline import procedural
from input_pipeline import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dataset_config(**overrides):
  """The default `dataset` block, with every augmentation off unless asked.

  The augmentation keys are set explicitly, so the tests pin their meaning
  whatever the defaults of configs/default.py become.
  """
  config = default.get_config().dataset
  config.resolution = 32
  config.random_flip = False
  config.vertical_flip = False
  config.translate = 0.0
  config.rotate = 0.0
  config.standardize = False
  config.diffaugment = ''
  config.lock()  # A mistyped override fails instead of adding a key.
  config.update_from_flattened_dict(overrides)
  return config


def take(dataset, count):
  """The first `count` batches' images, as numpy arrays."""
  iterator = dataset.as_numpy_iterator()
  return [next(iterator)['image'] for _ in range(count)]


def to_uint8(images):
  return np.round((images + 1) * 127.5).astype(np.uint8)


def image_keys(batches):
  """Bytes of every image of the batches (the identity of an example)."""
  return [image.tobytes() for batch in batches for image in to_uint8(batch)]


def make_folder(tmp_path, count=20, resolution=32, images_per_shard=6):
  """A prepared folder of `count` distinct procedural faces."""
  src = tmp_path / 'src'
  src.mkdir()
  faces = procedural.render_faces(range(count), 40)
  for index, face in enumerate(faces):
    tf.io.write_file(str(src / f'{index:03d}.png'), tf.io.encode_png(face))
  out = tmp_path / 'prepared'
  prepare.prepare(str(src), str(out), resolution,
                  images_per_shard=images_per_shard, progress=False)
  return str(out)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return make_folder(tmp_path_factory.mktemp('folder'))


# --- Procedural ------------------------------------------------------------


def test_procedural_epoch_is_a_permutation_of_all_faces_in_range():
  config = dataset_config(num_images=24)
  batches = take(input_pipeline.create_dataset(
      config, local_batch_size=8, seed=0), 6)
  for batch in batches:
    assert batch.shape == (8, 32, 32, 3) and batch.dtype == np.float32
    assert -1 <= batch.min() and batch.max() <= 1
  expected = sorted(face.tobytes()
                    for face in procedural.render_faces(range(24), 32))
  first_epoch, second_epoch = image_keys(batches[:3]), image_keys(batches[3:])
  assert sorted(first_epoch) == expected
  assert sorted(second_epoch) == expected
  assert first_epoch != second_epoch  # Each epoch has its own order.


def test_same_seed_same_stream_other_seed_other_stream():
  config = dataset_config(num_images=40, random_flip=True, translate=0.1)
  first = take(input_pipeline.create_dataset(
      config, local_batch_size=4, seed=3), 3)
  again = take(input_pipeline.create_dataset(
      config, local_batch_size=4, seed=3), 3)
  other = take(input_pipeline.create_dataset(
      config, local_batch_size=4, seed=4), 3)
  np.testing.assert_array_equal(np.stack(first), np.stack(again))
  assert not np.array_equal(np.stack(first), np.stack(other))


AUGMENTED = dict(random_flip=True, vertical_flip=True, translate=0.1,
                 rotate=10.0)


@pytest.mark.parametrize('source', ['procedural', 'folder', 'tfds'])
def test_start_batch_equals_dropping_batches(source, folder, tfds_dir):
  # 20 examples (12 for tfds), batches of 4, windows of 6 for folder and
  # tfds: batch 7 starts at position 28 = epoch 1, offset 8, inside the
  # second shuffle window (tfds: epoch 2, offset 4).
  config = dataset_config(source=source, path=folder, num_images=20,
                          name='tiny_faces', image_key='picture',
                          data_dir=tfds_dir, shuffle_buffer=6, **AUGMENTED)
  stream = take(input_pipeline.create_dataset(
      config, local_batch_size=4, seed=1), 12)
  for start in (1, 7):
    resumed = take(input_pipeline.create_dataset(
        config, local_batch_size=4, seed=1, start_batch=start), 12 - start)
    np.testing.assert_array_equal(np.stack(resumed), np.stack(stream[start:]))


@pytest.mark.parametrize('source', ['procedural', 'folder'])
def test_processes_read_disjoint_parts_covering_the_dataset(source, folder):
  config = dataset_config(source=source, path=folder, num_images=20)
  parts = [image_keys(take(input_pipeline.create_dataset(
      config, local_batch_size=2, seed=0, process_index=index,
      process_count=2), 5)) for index in (0, 1)]
  assert len(set(parts[0])) == len(set(parts[1])) == 10
  assert not set(parts[0]) & set(parts[1])
  everything = image_keys(take(input_pipeline.create_dataset(
      config, local_batch_size=4, seed=0), 5))
  assert set(parts[0]) | set(parts[1]) == set(everything)
  assert len(set(everything)) == 20


# --- Folder ----------------------------------------------------------------


def test_folder_serves_the_prepared_images_exactly(folder):
  config = dataset_config(source='folder', path=folder)
  images = np.concatenate(take(input_pipeline.create_dataset(
      config, local_batch_size=5, seed=0), 4))
  written = []
  for record in tf.data.TFRecordDataset(
      sorted(tf.io.gfile.glob(os.path.join(folder, '*.tfrecord')))):
    example = tf.train.Example.FromString(record.numpy())
    pixels = example.features.feature['image'].bytes_list.value[0]
    written.append(pixels)
  assert len(written) == 20
  assert sorted(image.tobytes() for image in to_uint8(images)) == sorted(
      written)


def test_folder_prepared_larger_is_resized(tmp_path):
  path = make_folder(tmp_path, count=4, resolution=64)
  config = dataset_config(source='folder', path=path, resolution=32)
  (batch,) = take(input_pipeline.create_dataset(
      config, local_batch_size=4, seed=0), 1)
  assert batch.shape == (4, 32, 32, 3)


def test_standardize_uses_the_manifest_statistics(folder):
  config = dataset_config(source='folder', path=folder, standardize=True)
  images = np.concatenate(take(input_pipeline.create_dataset(
      config, local_batch_size=5, seed=0), 4))  # One epoch.
  np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), 0, atol=1e-3)
  np.testing.assert_allclose(images.std(axis=(0, 1, 2)), 1, atol=1e-3)


# --- Augmentation ----------------------------------------------------------


def test_random_flip_mirrors_about_half_of_the_images():
  plain = dataset_config(num_images=64)
  flipped = dataset_config(num_images=64, random_flip=True)
  originals = np.concatenate(take(input_pipeline.create_dataset(
      plain, local_batch_size=32, seed=0), 2))
  results = np.concatenate(take(input_pipeline.create_dataset(
      flipped, local_batch_size=32, seed=0), 2))
  same = [np.array_equal(a, b) for a, b in zip(originals, results)]
  mirrored = [np.array_equal(a[:, ::-1], b)
              for a, b in zip(originals, results)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert 16 <= sum(mirrored) <= 48


def test_vertical_flip_translate_and_rotate_change_images():
  plain = np.stack(take(input_pipeline.create_dataset(
      dataset_config(num_images=16), local_batch_size=16, seed=0), 1))
  for option in (dict(vertical_flip=True), dict(translate=0.2),
                 dict(rotate=20.0)):
    augmented = np.stack(take(input_pipeline.create_dataset(
        dataset_config(num_images=16, **option), local_batch_size=16,
        seed=0), 1))
    changed = [not np.array_equal(a, b) for a, b in zip(plain[0],
                                                         augmented[0])]
    assert sum(changed) >= 4, option
    assert -1 <= augmented.min() and augmented.max() <= 1


# --- TFDS ------------------------------------------------------------------


def test_tfds_source_with_mock_data():
  config = dataset_config(source='tfds', name='celeb_a', crop='celeba',
                          data_dir='/nonexistent/tfds')
  with tfds.testing.mock_data(num_examples=6):
    (batch,) = take(input_pipeline.create_dataset(
        config, local_batch_size=6, seed=0), 1)
  assert batch.shape == (6, 32, 32, 3)
  assert -1 <= batch.min() and batch.max() <= 1
  # Mock images are noise: decoded, cropped and resized, still not flat.
  assert len(set(image_keys([batch]))) == 6 and batch.std() > 0.02


def write_tfds_dataset(data_dir, name, images, attributes=None):
  """Writes a real TFDS dataset (files + metadata) that tfds.builder finds.

  Written by hand rather than by a GeneratorBasedBuilder, whose
  download_and_prepare needs the optional importlib_resources package.
  `attributes` ({name: bool [N]}) adds celeb_a's 'attributes' feature.
  """
  spec = {'picture': tfds.features.Image(shape=images.shape[1:]),
          'id': tf.int64}
  if attributes:
    spec['attributes'] = {name: np.bool_ for name in attributes}
  features = tfds.features.FeaturesDict(spec)
  path = os.path.join(data_dir, name, '1.0.0')
  os.makedirs(path)
  with tf.io.TFRecordWriter(
      os.path.join(path, f'{name}-train.tfrecord-00000-of-00001')) as writer:
    for index, image in enumerate(images):
      example = {'picture': image, 'id': index}
      if attributes:
        example['attributes'] = {name: bool(values[index])
                                 for name, values in attributes.items()}
      writer.write(features.serialize_example(example))
  tfds.folder_dataset.write_metadata(
      data_dir=path, features=features,
      split_infos=[tfds.core.SplitInfo(name='train',
                                       shard_lengths=[len(images)],
                                       num_bytes=0)],
      filename_template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}')


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """A real TFDS dataset 'tiny_faces': 12 procedural faces of 48x40."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  faces = procedural.render_faces(range(12), 48)
  write_tfds_dataset(data_dir, 'tiny_faces', faces[:, :, 4:44])
  return data_dir


def test_tfds_source_splits_between_processes(tfds_dir):
  config = dataset_config(source='tfds', name='tiny_faces', image_key='picture',
                          data_dir=tfds_dir, crop='center')
  parts = [take(input_pipeline.create_dataset(
      config, local_batch_size=3, seed=0, process_index=index,
      process_count=2), 4) for index in (0, 1)]
  # Two epochs each: the same 6 examples, in another order.
  for part in parts:
    assert sorted(image_keys(part[:2])) == sorted(image_keys(part[2:]))
    assert image_keys(part[:2]) != image_keys(part[2:])
  parts = [image_keys(part[:2]) for part in parts]
  assert len(set(parts[0])) == len(set(parts[1])) == 6
  assert not set(parts[0]) & set(parts[1])
  # The center crop of each 48x40 face resized to 32x32, as TF computes it.
  faces = procedural.render_faces(range(12), 48)
  expected = tf.cast(tf.round(tf.image.resize(
      faces[:, 4:44, 4:44], [32, 32], 'bilinear', antialias=True)),
                     tf.uint8).numpy()
  assert set(parts[0]) | set(parts[1]) == {face.tobytes()
                                           for face in expected}


def test_tfds_missing_data_says_how_to_get_it(tmp_path):
  config = dataset_config(source='tfds', name='mnist', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match='tfds build mnist'):
    input_pipeline.validate_dataset_config(config)


# --- Validation ------------------------------------------------------------


@pytest.mark.parametrize('overrides, message', [
    (dict(source='imagenet'), "procedural, folder, tfds"),
    (dict(resolution=48), 'power of two'),
    (dict(resolution=512), 'power of two'),
    (dict(resolution=16), 'power of two'),
    (dict(source='folder', path=''), 'input_pipeline.prepare'),
    (dict(source='folder', path='/nonexistent/x'), 'input_pipeline.prepare'),
    (dict(source='tfds', crop='middle'), 'center, celeba, none'),
    (dict(diffaugment='color,zoom'), 'zoom'),
    (dict(translate=0.5), 'translate'),
    (dict(num_images=0), 'num_images'),
])
def test_validate_dataset_config_explains(overrides, message):
  with pytest.raises(ValueError, match=message):
    input_pipeline.validate_dataset_config(dataset_config(**overrides))


def test_validate_rejects_folder_prepared_too_small(folder):
  input_pipeline.validate_dataset_config(
      dataset_config(source='folder', path=folder))
  with pytest.raises(ValueError, match='--resolution=64'):
    input_pipeline.validate_dataset_config(
        dataset_config(source='folder', path=folder, resolution=64))


def test_more_processes_than_examples_is_an_error():
  with pytest.raises(ValueError, match='no examples'):
    input_pipeline.create_dataset(dataset_config(num_images=2),
                                  local_batch_size=1, seed=0, process_index=0,
                                  process_count=3)


def test_even_range_covers_everything_once():
  ranges = [sources.even_range(10, index, 3) for index in range(3)]
  assert ranges == [(0, 3), (3, 6), (6, 10)]


# --- DiffAugment -----------------------------------------------------------


def _images():
  return jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 3),
                            minval=-1, maxval=1)


def test_diff_augment_is_deterministic_differentiable_and_changes_images():
  images = _images()
  for policy in ('color', 'translation', 'cutout'):
    first = diffaugment.diff_augment(images, jax.random.PRNGKey(1), policy)
    assert first.shape == images.shape and first.dtype == images.dtype
    np.testing.assert_array_equal(
        first, diffaugment.diff_augment(images, jax.random.PRNGKey(1), policy))
    assert not np.allclose(
        first, diffaugment.diff_augment(images, jax.random.PRNGKey(2), policy))
    assert not np.allclose(first, images), policy
  # The train step jits it and differentiates through it.
  loss = jax.jit(jax.value_and_grad(lambda x, key: jnp.sum(
      diffaugment.diff_augment(x, key, 'color,translation,cutout')**2)))
  value, gradient = loss(images, jax.random.PRNGKey(1))
  assert np.isfinite(value) and np.all(np.isfinite(gradient))
  assert np.abs(gradient).sum() > 0
  # Cut-out pixels get no gradient; the others do.
  cutout_gradient = jax.grad(lambda x: jnp.sum(diffaugment.diff_augment(
      x, jax.random.PRNGKey(1), 'cutout')))(images)
  assert 0 < np.mean(cutout_gradient == 0) < 0.5
  assert set(np.unique(cutout_gradient)) == {0.0, 1.0}


def test_diff_augment_translation_and_cutout_semantics():
  images = jnp.ones((64, 16, 16, 1))
  shifted = diffaugment.diff_augment(images, jax.random.PRNGKey(0),
                                     'translation')
  # Shifts of at most 2 pixels (1/8 of 16) bring in zero rows/columns.
  assert set(np.unique(shifted)) <= {0.0, 1.0}
  zero_rows = (shifted[..., 0] == 0).all(axis=2).sum(axis=1)
  assert zero_rows.max() <= 2 and zero_rows.sum() > 0
  cut = diffaugment.diff_augment(images, jax.random.PRNGKey(0), 'cutout')
  zeros = (cut == 0).sum(axis=(1, 2, 3))
  assert zeros.max() == 8 * 8 and zeros.min() > 0  # Clipped at the border.
  assert diffaugment.diff_augment(images, jax.random.PRNGKey(0),
                                  '') is images


def test_diff_augment_flip_mirrors_about_half_the_images():
  images = jax.random.uniform(jax.random.PRNGKey(0), (64, 4, 4, 3))
  flipped = diffaugment.diff_augment(images, jax.random.PRNGKey(3), 'flip')
  mirrored = np.all(np.asarray(flipped) == np.asarray(images)[:, :, ::-1],
                    axis=(1, 2, 3))
  kept = np.all(np.asarray(flipped) == np.asarray(images), axis=(1, 2, 3))
  assert np.all(mirrored ^ kept)  # Each image one or the other, never both.
  assert 16 < mirrored.sum() < 48


def test_train_step_imports_without_tensorflow():
  # GPU machines that run the step and DiffAugment have no TensorFlow.
  result = subprocess.run(
      [sys.executable, '-c',
       'import sys; from facegan_jax import train_step; '
       'print(sorted(m for m in ("tensorflow", "input_pipeline") '
       'if m in sys.modules))'],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert result.stdout.strip() == '[]'
