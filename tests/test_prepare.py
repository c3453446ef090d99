"""The dataset tool: every kind of good and bad file, idempotence, CLI."""

import errno
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from PIL import features

import input_pipeline
from input_pipeline import crops
from input_pipeline import image_files
from input_pipeline import prepare
from tests import test_input_pipeline as pipeline_tests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELEBA = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'celeba_10k')


def photo(height, width, seed=0):
  """A smooth, photo-like RGB uint8 image (compresses like a photo)."""
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  phase = np.random.default_rng(seed).uniform(0, 6, 3)
  channels = [np.sin(5 * x + 3 * y + p) for p in phase]
  return np.round(127.5 + 100 * np.stack(channels, -1)).astype(np.uint8)


def encoded(image, fmt, **options):
  stream = io.BytesIO()
  image.save(stream, fmt, **options)
  return stream.getvalue()


def png_chunk(kind, data):
  return (struct.pack('>I', len(data)) + kind + data +
          struct.pack('>I', zlib.crc32(kind + data)))


def header_only_png(width, height):
  """A valid PNG header declaring a huge image: a decompression bomb."""
  return (b'\x89PNG\r\n\x1a\n' +
          png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0,
                                         0)) +
          png_chunk(b'IDAT', zlib.compress(b'\0' * 64)) +
          png_chunk(b'IEND', b''))


# What each good file must come out as (besides being written at all).
GOOD = ('rgb.jpg', 'nested/deeper/rgb.png', 'upper.JPG', 'gray.png',
        'rgba.png', 'palette.gif', 'animated.gif', 'cmyk.jpg', 'gray16.png',
        'photo.webp', 'photo.bmp', 'small.png', 'link.jpg')
BAD = {
    'truncated.jpg': image_files.CORRUPT,
    'truncated.png': image_files.CORRUPT,
    'bad_data.png': image_files.CORRUPT,
    'text.jpg': image_files.NOT_AN_IMAGE,
    'empty.png': image_files.EMPTY,
    'bomb.png': image_files.TOO_MANY_PIXELS,
    'big.png': image_files.TOO_MANY_PIXELS,
    'loop.jpg': image_files.SYMLINK_LOOP,
    'broken.png': image_files.BROKEN_SYMLINK,
    'nested/up': image_files.SYMLINK_LOOP,
}
MAX_PIXELS = 1000 * 1000


def make_zoo(root):
  """A folder with good images of every mode and every kind of bad file."""
  (root / 'nested' / 'deeper').mkdir(parents=True)
  rgb = Image.fromarray(photo(48, 40))
  files = {
      'rgb.jpg': encoded(rgb, 'JPEG', quality=95),
      'nested/deeper/rgb.png': encoded(rgb, 'PNG'),
      'upper.JPG': encoded(rgb, 'JPEG'),
      'gray.png': encoded(rgb.convert('L'), 'PNG'),
      'palette.gif': encoded(rgb.convert('P'), 'GIF'),
      'cmyk.jpg': encoded(Image.new('CMYK', (40, 40), (0, 255, 255, 0)),
                          'JPEG'),
      'gray16.png': encoded(Image.fromarray(np.full((40, 40), 32768,
                                                    np.uint16)), 'PNG'),
      'photo.bmp': encoded(rgb, 'BMP'),
      'small.png': encoded(Image.fromarray(photo(16, 16)), 'PNG'),
      'text.jpg': b'Not an image, despite the name.\n',
      'empty.png': b'',
      'bomb.png': header_only_png(40000, 40000),
      'big.png': encoded(Image.new('L', (1100, 1000)), 'PNG'),
      'notes.txt': b'ignored: not an image extension\n',
  }
  if features.check('webp'):
    files['photo.webp'] = encoded(rgb, 'WEBP')
  rgba = np.concatenate([photo(40, 40), np.full((40, 40, 1), 255, np.uint8)],
                        -1)
  rgba[:, :20, 3] = 0  # Left half transparent.
  files['rgba.png'] = encoded(Image.fromarray(rgba), 'PNG')
  red, blue = Image.new('RGB', (40, 40), 'red'), Image.new('RGB', (40, 40),
                                                           'blue')
  files['animated.gif'] = encoded(red, 'GIF', save_all=True,
                                  append_images=[blue])
  files['truncated.jpg'] = files['rgb.jpg'][:len(files['rgb.jpg']) // 2]
  big_png = encoded(Image.fromarray(photo(64, 64, seed=1)), 'PNG')
  files['truncated.png'] = big_png[:len(big_png) // 2]
  # Intact structure, scrambled compressed pixels: fails only when decoded.
  data = bytearray(big_png)
  start = data.index(b'IDAT') + 4
  data[start + 20:start + 60] = bytes(range(40))
  files['bad_data.png'] = bytes(data)
  for name, content in files.items():
    (root / name).write_bytes(content)
  os.symlink('rgb.jpg', root / 'link.jpg')
  os.symlink('loop.jpg', root / 'loop.jpg')
  os.symlink('missing.jpg', root / 'broken.png')
  os.symlink('..', root / 'nested' / 'up')
  return root


@pytest.fixture(scope='module')
def zoo(tmp_path_factory):
  root = make_zoo(tmp_path_factory.mktemp('zoo') / 'src')
  out = root.parent / 'out'
  manifest = prepare.prepare(str(root), str(out), 32, crop='center',
                             max_pixels=MAX_PIXELS, progress=False)
  return root, out, manifest


def test_every_good_file_written_every_bad_file_skipped_with_its_reason(zoo):
  _, out, manifest = zoo
  good = [name for name in GOOD
          if name != 'photo.webp' or features.check('webp')]
  assert manifest['written'] == len(good)
  expected = {}
  for reason in BAD.values():
    expected[reason] = expected.get(reason, 0) + 1
  assert manifest['skipped'] == expected
  assert sorted(manifest['skipped_files']) == sorted(
      [name, reason] for name, reason in BAD.items())
  assert manifest['upscaled_files'] == ['small.png']
  assert manifest['source']['ignored_files'] == 1
  assert {'CMYK', 'I;16', 'L', 'P', 'RGB', 'RGBA'} <= set(
      manifest['source_modes'])
  assert sum(shard['count'] for shard in manifest['shards']) == len(good)
  on_disk = json.loads((out / prepare.MANIFEST).read_text())
  assert on_disk == manifest


def read_records(out):
  """{source path: image [R, R, 3] uint8} of a prepared folder, via TF."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  manifest = prepare.read_manifest(str(out))
  size = manifest['resolution']
  images = {}
  for shard in manifest['shards']:
    for record in tf.data.TFRecordDataset(str(out / shard['file'])):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      images[feature['path'].bytes_list.value[0].decode()] = np.frombuffer(
          feature['image'].bytes_list.value[0], np.uint8).reshape(size, size, 3)
  return images


def test_modes_are_converted_to_rgb_faithfully(zoo):
  root, out, _ = zoo
  images = read_records(out)
  assert set(images) == {name for name in GOOD if name in images} and (
      len(images) == len(GOOD) - (not features.check('webp')))
  rgba = images['rgba.png'].astype(int)
  assert (rgba[:, :14] == 255).all()  # Transparent: laid over white.
  assert not (rgba[:, 18:] == 255).all()
  gray = images['gray.png']
  assert (gray[..., 0] == gray[..., 1]).all() and (
      gray[..., 1] == gray[..., 2]).all()
  # 16-bit 32768 scales to 128, not clipped to 255.
  assert abs(int(images['gray16.png'].mean()) - 128) <= 1
  np.testing.assert_allclose(images['cmyk.jpg'].reshape(-1, 3).mean(0),
                             [255, 0, 0], atol=12)
  # Animated GIF: the first frame (red), not the second (blue).
  np.testing.assert_allclose(images['animated.gif'].reshape(-1, 3).mean(0),
                             [255, 0, 0], atol=12)
  np.testing.assert_array_equal(images['link.jpg'], images['rgb.jpg'])
  expected, note, _ = image_files.load_image(str(root / 'rgb.jpg'), 32,
                                             'center', 'lanczos')
  assert note is None
  np.testing.assert_array_equal(images['rgb.jpg'], expected)


def test_pipeline_yields_exactly_the_written_images(zoo):
  _, out, manifest = zoo
  config = pipeline_tests.dataset_config(source='folder', path=str(out))
  (batch,) = pipeline_tests.take(input_pipeline.create_dataset(
      config, local_batch_size=manifest['written'], seed=0), 1)
  assert batch.shape == (manifest['written'], 32, 32, 3)
  assert batch.dtype == np.float32 and -1 <= batch.min() <= batch.max() <= 1
  assert sorted(pipeline_tests.image_keys([batch])) == sorted(
      image.tobytes() for image in read_records(out).values())


def test_min_size_skips_small_images_instead_of_upscaling(zoo, tmp_path):
  root, _, _ = zoo
  manifest = prepare.prepare(str(root), str(tmp_path / 'out'), 32,
                             min_size=20, max_pixels=MAX_PIXELS,
                             progress=False)
  assert manifest['skipped'][image_files.TOO_SMALL] == 1
  assert manifest['upscaled'] == 0
  assert [f for f in manifest['skipped_files']
          if f[1] == image_files.TOO_SMALL] == [['small.png', 'too_small']]


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
  src = tmp_path / 'src'
  src.mkdir()
  for name in ('a.png', 'locked.png'):
    Image.fromarray(photo(40, 40)).save(src / name)
  locked = str(src / 'locked.png')
  if os.geteuid() == 0:
    # chmod 000 does not stop root: make opening that one file fail instead.
    real_open = open

    def guarded_open(path, *args, **kwargs):
      if os.fspath(path) == locked:
        raise PermissionError(errno.EACCES, 'Permission denied', path)
      return real_open(path, *args, **kwargs)

    monkeypatch.setattr(image_files, 'open', guarded_open, raising=False)
  else:
    os.chmod(locked, 0)
  manifest = prepare.prepare(str(src), str(tmp_path / 'out'), 32,
                             progress=False)
  assert manifest['written'] == 1
  assert manifest['skipped_files'] == [['locked.png', image_files.UNREADABLE]]


def test_rerun_is_idempotent_and_notices_changes(tmp_path, capsys):
  src = tmp_path / 'src'
  src.mkdir()
  for index in range(3):
    Image.fromarray(photo(40, 40, seed=index)).save(src / f'{index}.png')
  out = tmp_path / 'out'
  first = prepare.prepare(str(src), str(out), 32, progress=False)
  shard = out / first['shards'][0]['file']
  stamp = shard.stat().st_mtime_ns
  assert prepare.prepare(str(src), str(out), 32, progress=False) == first
  assert 'up to date' in capsys.readouterr().err
  assert shard.stat().st_mtime_ns == stamp  # Nothing rewritten.
  Image.fromarray(photo(40, 40, seed=9)).save(src / '3.png')
  second = prepare.prepare(str(src), str(out), 32, progress=False)
  assert second['written'] == 4
  assert second['source']['fingerprint'] != first['source']['fingerprint']
  # Other settings are another dataset, too.
  third = prepare.prepare(str(src), str(out), 32, crop='none',
                          progress=False)
  assert third['source']['fingerprint'] != second['source']['fingerprint']
  assert sorted(os.listdir(out)) == ['data-00000.tfrecord', 'manifest.json']


def test_worker_processes_write_identical_output(tmp_path):
  src = tmp_path / 'src'
  (src / 'sub').mkdir(parents=True)
  for index in range(40):
    Image.fromarray(photo(40, 36, seed=index)).save(
        src / ('sub' if index % 3 else '') / f'{index:02d}.jpg')
  (src / 'bad.jpg').write_bytes(b'junk')
  outputs = []
  for workers in (1, 2):
    out = tmp_path / f'out{workers}'
    manifest = prepare.prepare(str(src), str(out), 32, workers=workers,
                               images_per_shard=16, progress=False)
    outputs.append((manifest, {name: (out / name).read_bytes()
                               for name in sorted(os.listdir(out))}))
  assert outputs[0] == outputs[1]
  assert outputs[0][0]['written'] == 40
  # Records are serialized canonically, so another process writes the same.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for record in tf.data.TFRecordDataset(str(tmp_path / 'out1' /
                                            'data-00000.tfrecord')):
    record = record.numpy()
    assert record == tf.train.Example.FromString(record).SerializeToString(
        deterministic=True)
  assert [shard['count'] for shard in outputs[0][0]['shards']] == [16, 16, 8]


def test_cli_exit_codes_and_messages(tmp_path, capsys):
  assert prepare.main(['--src', str(tmp_path / 'missing'), '--out',
                       str(tmp_path / 'out'), '--resolution', '32']) == 2
  assert 'does not exist' in capsys.readouterr().err
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'readme.txt').write_text('no images here')
  assert prepare.main(['--src', str(empty), '--out', str(tmp_path / 'out'),
                       '--resolution', '32']) == 2
  assert 'No image files' in capsys.readouterr().err
  (empty / 'fake.png').write_bytes(b'not a png')
  assert prepare.main(['--src', str(empty), '--out', str(tmp_path / 'out'),
                       '--resolution', '32', '--quiet']) == 1
  assert 'No usable image' in capsys.readouterr().out
  Image.fromarray(photo(40, 40)).save(empty / 'real.png')
  assert prepare.main(['--src', str(empty), '--out', str(tmp_path / 'out'),
                       '--resolution', '32', '--workers', '1']) == 0
  captured = capsys.readouterr()
  assert ': 1 images' in captured.out and '1 not_an_image' in captured.out
  assert 'prepare: 2/2 files' in captured.err  # The progress line.


def test_help_runs_without_tensorflow():
  result = subprocess.run(
      [sys.executable, '-c',
       'import sys; from input_pipeline import prepare\n'
       'try:\n  prepare.main(["--help"])\nexcept SystemExit:\n  pass\n'
       'print("tensorflow" in sys.modules)'],
      cwd=REPO, capture_output=True, text=True, check=True)
  assert '--src' in result.stdout and '--crop' in result.stdout
  assert result.stdout.strip().endswith('False')


def test_celeba_crop_box():
  assert crops.crop_box(218.0, 178.0, 'celeba') == (39.0, 19.0, 140.0, 140.0)
  # The half-size copies get the same crop, scaled: 70x70 at (19.5, 9.5).
  assert crops.crop_box(109.0, 89.0, 'celeba') == (19.5, 9.5, 70.0, 70.0)
  assert crops.crop_box(100.0, 60.0, 'center') == (20.0, 0.0, 60.0, 60.0)
  assert crops.crop_box(100.0, 60.0, 'none') == (0.0, 0.0, 100.0, 60.0)


@pytest.mark.skipif(not os.path.isdir(CELEBA),
                    reason=f'real CelebA sample not found at {CELEBA}')
def test_celeba_sample_prepares_and_trains_at_64(tmp_path):
  src = tmp_path / 'celeba'
  src.mkdir()
  names = sorted(n for n in os.listdir(CELEBA) if n.endswith('.jpg'))[:200]
  for name in names:
    os.symlink(os.path.join(CELEBA, name), src / name)
  with Image.open(os.path.join(CELEBA, names[0])) as first:
    assert first.size == (89, 109)  # The half-size aligned CelebA images.
  out = tmp_path / 'celeba64'
  manifest = prepare.prepare(str(src), str(out), 64, crop='celeba',
                             workers=2, progress=False)
  assert manifest['written'] == 200 and manifest['skipped'] == {}
  # 70x70 crops resized to 64: a downscale, nothing upscaled.
  assert manifest['upscaled'] == 0
  config = pipeline_tests.dataset_config(source='folder', path=str(out),
                                         resolution=64, random_flip=True)
  input_pipeline.validate_dataset_config(config)
  batches = pipeline_tests.take(input_pipeline.create_dataset(
      config, local_batch_size=50, seed=0), 5)
  for batch in batches:
    assert batch.shape == (50, 64, 64, 3)
    assert -1 <= batch.min() and batch.max() <= 1
  # Faces: the middle of the crop is brighter and redder than its corners.
  images = np.concatenate(batches)
  middle = images[:, 24:40, 24:40].mean(axis=(0, 1, 2))
  assert middle[0] > middle[2] + 0.1
