"""Attribute conditioning: names, labels through the pipeline, conditional
models (input join, projection head), and a conditional run end to end."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import input_pipeline
from facegan_jax import checkpointing
from facegan_jax import conditioning
from facegan_jax import models
from facegan_jax import saved_run
from facegan_jax import scoring
from facegan_jax import train
from input_pipeline import prepare
from input_pipeline import prepared_arrays
from input_pipeline import procedural
from tests.test_input_pipeline import dataset_config
from tests.test_input_pipeline import write_tfds_dataset
from tests.tiny import tiny_config

NAMES = ('Even', 'Big', 'Third')
COUNT = 24


def _expected_labels(index: int) -> list[int]:
  return [int(index % 2 == 0), int(index >= COUNT // 2), int(index % 3 == 0)]


@pytest.fixture(scope='module')
def labelled(tmp_path_factory):
  """A prepared 32x32 folder of 24 faces with 3 attributes from a CSV."""
  root = tmp_path_factory.mktemp('labelled')
  src = root / 'src'
  src.mkdir()
  rows = ['filename,' + ','.join(NAMES)]
  for index, face in enumerate(procedural.render_faces(range(COUNT), 40)):
    Image.fromarray(face).save(src / f'{index:03d}.png')
    rows.append(f'{index:03d}.png,' + ','.join(
        map(str, _expected_labels(index))))
  (root / 'attr.csv').write_text('\n'.join(rows) + '\n')
  prepare.prepare(str(src), str(root / 'prepared'), 32, images_per_shard=10,
                  progress=False, labels=str(root / 'attr.csv'))
  return str(root / 'prepared')


# --- Names -------------------------------------------------------------------


def test_attribute_names_parse_all_and_subsets_in_the_given_order():
  assert conditioning.parse_attributes('', NAMES) == ()
  assert conditioning.parse_attributes('all', NAMES) == NAMES
  assert conditioning.parse_attributes(' Third, Even ', NAMES) == (
      'Third', 'Even')


@pytest.mark.parametrize('spec,available,message', [
    ('Smiling', NAMES, "'Smiling'"),
    ('Even,Smile,Bigg', NAMES, "'Smile', 'Bigg'"),
    ('Even,Even', NAMES, 'twice'),
    ('Even', (), 'no attribute labels'),
])
def test_bad_attribute_names_fail_listing_the_valid_ones(spec, available,
                                                         message):
  with pytest.raises(ValueError, match=message) as error:
    conditioning.parse_attributes(spec, available)
  if available:
    assert 'valid: Even, Big, Third' in str(error.value) or 'twice' in message


def test_unknown_attribute_fails_before_anything_compiles(labelled, tmp_path):
  config = tiny_config(**{'dataset.source': 'folder', 'dataset.path': labelled,
                          'dataset.attributes': 'Even,Smiling'})
  with pytest.raises(ValueError, match="'Smiling'.*valid: Even, Big, Third"):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_the_built_in_faces_have_no_labels():
  with pytest.raises(ValueError, match='prepare the folder with --labels'):
    input_pipeline.validate_dataset_config(dataset_config(attributes='all'))


# --- Labels through the input pipeline -------------------------------------------


def test_batches_carry_the_labels_of_their_own_images(labelled):
  images, labels = prepared_arrays.read_prepared(labelled)
  by_image = {image.tobytes(): row for image, row in zip(images, labels)}
  assert len(by_image) == COUNT
  config = dataset_config(source='folder', path=labelled,
                          attributes='Third,Even', random_flip=True)
  iterator = input_pipeline.create_dataset(
      config, local_batch_size=8, seed=3).as_numpy_iterator()
  seen = 0
  for _ in range(6):  # Two epochs, across shard and window boundaries.
    batch = next(iterator)
    assert batch['labels'].shape == (8, 2)
    assert batch['labels'].dtype == np.float32
    for image, row in zip(batch['image'], batch['labels']):
      pixels = np.round((image + 1) * 127.5).astype(np.uint8)
      stored = by_image.get(pixels.tobytes(),
                            by_image.get(pixels[:, ::-1].tobytes()))
      assert stored is not None  # The image (maybe flipped) is a stored one.
      np.testing.assert_array_equal(row, stored[[2, 0]])
      seen += 1
  assert seen == 48


def test_tfds_attributes_come_with_their_images(tmp_path):
  faces = procedural.render_faces(range(12), 32)
  truth = {'Even': np.arange(12) % 2 == 0, 'Big': np.arange(12) >= 6}
  write_tfds_dataset(str(tmp_path), 'tiny_celeb', faces, truth)
  config = dataset_config(source='tfds', name='tiny_celeb', crop='none',
                          image_key='picture', data_dir=str(tmp_path),
                          attributes='all')
  assert set(input_pipeline.resolve_attributes(config)) == {'Even', 'Big'}
  config.attributes = 'Big,Even'
  np.testing.assert_array_equal(input_pipeline.all_labels(config),
                                np.stack([truth['Big'], truth['Even']], 1))
  by_image = {face.tobytes(): index for index, face in enumerate(faces)}
  (batch,) = take_batches(input_pipeline.create_dataset(
      config, local_batch_size=12, seed=0), 1)
  for image, row in zip(batch['image'], batch['labels']):
    index = by_image[np.round((image + 1) * 127.5).astype(np.uint8).tobytes()]
    np.testing.assert_array_equal(row, [truth['Big'][index],
                                        truth['Even'][index]])


def test_stored_labels_follow_the_csv(labelled):
  assert prepared_arrays.attribute_names(labelled) == NAMES
  _, labels = prepared_arrays.read_prepared(labelled, with_images=False)
  expected = np.array([_expected_labels(i) for i in range(COUNT)])
  # Prepare writes files in path order, which is index order here.
  np.testing.assert_array_equal(labels, expected)
  config = dataset_config(source='folder', path=labelled, attributes='Big')
  np.testing.assert_array_equal(input_pipeline.all_labels(config),
                                expected[:, [1]])


def take_batches(dataset, count):
  """The first `count` whole batches (images and labels) as numpy."""
  iterator = dataset.as_numpy_iterator()
  return [next(iterator) for _ in range(count)]


# --- Models --------------------------------------------------------------------


def test_projection_is_the_inner_product_of_embedded_labels_and_features():
  features = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
  labels = jnp.array([[1, 0, 1]] * 2 + [[0, 0, 0]] * 3, jnp.float32)
  head = conditioning.Projection()
  params = head.init(jax.random.PRNGKey(1), features, labels)
  kernel = params['params']['embed']['kernel']  # [A, F]
  expected = jnp.sum(features * ((2 * labels - 1) @ kernel), axis=-1)
  np.testing.assert_allclose(head.apply(params, features, labels), expected,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('family', models.DISCRIMINATORS)
def test_every_critic_takes_labels_through_a_projection_head(family):
  config = tiny_config(**{'model.discriminator': family,
                          'model.generator': 'dcgan',
                          'model.d_norm': 'none',
                          'model.spectral_norm': False})
  side = 64 if family == 'resnet' else 32  # The ResNet starts at 64x64.
  critic = models.create_discriminator(config.model, side)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, side, side, 3))
  y = jnp.ones((4, 2))
  variables = critic.init(jax.random.PRNGKey(1), x, y, train=False)
  assert 'projection' in variables['params']
  # Make the head matter (it starts small), then check its form: the score
  # is affine in the signed labels, so s(10) + s(01) = s(11) + s(00).
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: v * 50 if 'projection' in jax.tree_util.keystr(path)
      else v, variables)
  score = lambda labels: critic.apply(
      variables, x, jnp.broadcast_to(jnp.array(labels, jnp.float32), (4, 2)),
      train=False)
  np.testing.assert_allclose(score([1, 0]) + score([0, 1]),
                             score([1, 1]) + score([0, 0]), rtol=1e-4,
                             atol=1e-4)
  assert float(jnp.abs(score([1, 1]) - score([0, 0])).max()) > 1e-3
  unconditional = critic.init(jax.random.PRNGKey(1), x, train=False)
  assert 'projection' not in unconditional['params']


@pytest.mark.parametrize('family', models.GENERATORS)
def test_every_generator_takes_z_joined_with_labels(family):
  overrides = {'model.generator': family, 'model.discriminator': 'dcgan'}
  if family == 'resnet':
    overrides['dataset.resolution'] = 64
  if family == 'stylegan2':
    overrides.update({'model.g_norm': 'none', 'model.mapping_layers': 2})
  config = tiny_config(**overrides)
  resolution = config.dataset.resolution
  generator = models.create_generator(config.model, resolution,
                                      num_attributes=2)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 16))
  joined = lambda labels: conditioning.generator_input(
      z, jnp.broadcast_to(jnp.array(labels, jnp.float32), (2, 2)))
  assert joined([1, 0]).shape == (2, 18)
  variables = generator.init(jax.random.PRNGKey(1), joined([0, 0]),
                             train=False)
  images = lambda labels: generator.apply(variables, joined(labels),
                                          train=False)
  assert images([0, 1]).shape == (2, resolution, resolution, 3)
  # Relative: a freshly initialized DCGAN draws images of ~1e-5.
  change = jnp.abs(images([0, 1]) - images([1, 0])).mean()
  assert float(change) > 0.01 * float(jnp.abs(images([0, 1])).mean())


# --- A conditional run -----------------------------------------------------------


@pytest.fixture(scope='module')
def conditional_run(labelled, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('conditional'))
  config = tiny_config(**{
      'dataset.source': 'folder', 'dataset.path': labelled,
      'dataset.attributes': 'all', 'num_train_steps': 2,
      'checkpoint_every': 2, 'sample_every': 2, 'num_samples': 4,
      'ema_standing_stats': 2})
  state = train.train_and_evaluate(config, workdir)
  return workdir, state


def test_a_conditional_run_saves_names_bank_and_attribute_grid(
    conditional_run, labelled):
  workdir, state = conditional_run
  assert int(state.step) == 2
  config, program, _, meta = saved_run.restore_run(workdir)
  assert meta['config']['dataset']['attributes'] == 'Even,Big,Third'
  assert program.attributes == NAMES
  np.testing.assert_array_equal(
      conditioning.load_label_bank(workdir, ('Big',)),
      prepared_arrays.read_prepared(labelled, False)[1][:, [1]])
  grid = np.asarray(Image.open(
      os.path.join(workdir, 'samples', 'attributes_ema_0000002.png')))
  # 3 attributes x (off, on) rows of 4 latents, 32x32 with 1-pixel gaps.
  assert grid.shape == (6 * 33 + 1, 4 * 33 + 1, 3)
  assert config.dataset.attributes == 'Even,Big,Third'


def test_conditional_samples_follow_the_labels_drawn_from_the_bank(
    conditional_run):
  workdir, _ = conditional_run
  config, program, state, _ = saved_run.restore_run(workdir)
  bank = conditioning.load_label_bank(workdir, program.attributes)
  draw = lambda bank: np.concatenate(list(scoring.generate_images(
      config, program, state, 6, 4, seed=1, label_bank=bank)))
  first, again = draw(bank), draw(bank)
  np.testing.assert_array_equal(first, again)
  flipped = draw(1 - bank)  # Same latents, every label inverted.
  # A 2-step generator draws nearly flat images; the labels still show.
  assert np.abs(first.astype(int) - flipped.astype(int)).sum() > 100
  with pytest.raises(ValueError, match='label bank'):
    next(scoring.generate_images(config, program, state, 4, 4))


def test_standing_statistics_of_a_conditional_run_use_the_label_bank(
    conditional_run):
  """The EMA generator's standing statistics are computed with labels drawn
  from the run's bank (the same draws with the bank inverted differ)."""
  workdir, state = conditional_run
  _, program, _, _ = saved_run.restore_run(workdir)
  bank = conditioning.load_label_bank(workdir, program.attributes)
  key = jax.random.PRNGKey(tiny_config().seed + train._STANDING_SEED_OFFSET)  # pylint: disable=protected-access
  standing = lambda bank: jax.tree_util.tree_leaves(program.standing_stats(
      state.ema_params, state.ema_batch_stats, key, bank.astype(np.float32)))
  expected, inverted = standing(bank), standing(1 - bank)
  for saved, want in zip(jax.tree_util.tree_leaves(state.ema_batch_stats),
                         expected):
    np.testing.assert_allclose(saved, want, rtol=1e-6, atol=1e-7)
  assert not all(np.allclose(e, i) for e, i in zip(expected, inverted))


def test_a_conditional_run_resumes(conditional_run, tmp_path):
  workdir, state = conditional_run
  config = checkpointing.flatten_config(
      saved_run.restore_run(workdir)[3]['config'])
  resumed_config = tiny_config(**{
      'dataset.source': 'folder', 'dataset.path': config['dataset.path'],
      'dataset.attributes': 'all', 'num_train_steps': 3,
      'checkpoint_every': 2, 'sample_every': 2, 'num_samples': 4,
      'ema_standing_stats': 2})
  resumed = train.train_and_evaluate(resumed_config, workdir)
  assert int(resumed.step) == 3
