"""Attribute labels: both file formats, every malformed case, and prepare
--labels writing them into real TFRecords and manifest.json."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from input_pipeline import labels
from input_pipeline import prepare
from tests.test_prepare import CELEBA
from tests.test_prepare import photo

CELEBA_HEADER = '4\nSmiling Male Eyeglasses\n'


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_celeba_format_reads_names_and_maps_minus_one_to_zero(tmp_path):
  table = labels.read_labels(_write(tmp_path, 'attr.txt', CELEBA_HEADER + (
      'a.jpg  1 -1  1\n'
      'sub/b.jpg -1  1 -1\n')))
  assert table.names == ('Smiling', 'Male', 'Eyeglasses')
  np.testing.assert_array_equal(table.rows['a.jpg'], [1, 0, 1])
  np.testing.assert_array_equal(table.rows['sub/b.jpg'], [0, 1, 0])
  assert table.malformed == {} and table.malformed_rows == 0


def test_csv_takes_zero_one_and_minus_one_one(tmp_path):
  table = labels.read_labels(_write(tmp_path, 'attr.csv', (
      'filename,Smiling,Male\n'
      'a.jpg,1,0\n'
      './b.jpg,-1,1\n'
      '\n')))
  assert table.names == ('Smiling', 'Male')
  np.testing.assert_array_equal(table.rows['a.jpg'], [1, 0])
  np.testing.assert_array_equal(table.rows['b.jpg'], [0, 1])


@pytest.mark.parametrize('row,reason', [
    ('a.jpg 1 -1\n', '2 values for 3 attributes'),
    ('a.jpg 1 -1 1 1\n', '4 values for 3 attributes'),
    ('a.jpg 1 0 1\n', "value '0' is not one of -1, 1"),
    ('a.jpg 1 yes 1\n', "value 'yes'"),
    ('a.jpg 1 -1 1\na.jpg 1 -1 1\n', 'more than one row'),
])
def test_every_malformed_celeba_row_is_counted_never_guessed(tmp_path, row,
                                                            reason):
  table = labels.read_labels(_write(tmp_path, 'attr.txt',
                                    CELEBA_HEADER + row + 'ok.jpg 1 1 1\n'))
  assert 'a.jpg' not in table.rows
  assert reason in table.malformed['a.jpg']
  assert table.malformed_rows == row.count('\n')  # A duplicate is two rows.
  np.testing.assert_array_equal(table.rows['ok.jpg'], [1, 1, 1])


@pytest.mark.parametrize('row,reason', [
    ('a.jpg,1\n', '1 values for 2 attributes'),
    ('a.jpg,1,2\n', "value '2' is not one of -1, 0, 1"),
    ('a.jpg,1,\n', "value ''"),
    (',1,0\n', 'no file name'),
])
def test_every_malformed_csv_row_is_counted(tmp_path, row, reason):
  table = labels.read_labels(_write(tmp_path, 'attr.csv',
                                    'filename,Smiling,Male\n' + row))
  assert table.rows == {}
  assert table.malformed_rows == 1
  assert reason in next(iter(table.malformed.values()))


@pytest.mark.parametrize('text,message', [
    ('', 'no attribute names'),
    ('filename\na.jpg\n', 'no attribute names'),
    ('3\n', 'no attribute names'),
    ('filename,Smiling,Smiling\n', 'names an attribute twice: Smiling'),
])
def test_a_file_without_usable_names_is_refused(tmp_path, text, message):
  with pytest.raises(ValueError, match=message):
    labels.read_labels(_write(tmp_path, 'attr.csv', text))
  with pytest.raises(ValueError, match='cannot be read'):
    labels.read_labels(str(tmp_path / 'missing.txt'))


def test_match_counts_each_case_once(tmp_path):
  table = labels.read_labels(_write(tmp_path, 'attr.txt', CELEBA_HEADER + (
      'good.jpg 1 1 -1\n'
      'bad.jpg 1 1\n'          # image exists, row malformed
      'gone.jpg 1 1 1\n'       # row, no image
      'gone_bad.jpg 1\n')))    # malformed row, no image
  result = labels.match(table, ['good.jpg', 'bad.jpg', 'unlisted.jpg'])
  assert result['counts'] == {'matched': 1, 'images_without_labels': 1,
                              'labels_without_images': 1, 'malformed_rows': 2}
  assert result['unlabelled'] == {'bad.jpg': 'malformed label row',
                                  'unlisted.jpg': 'no label row'}
  np.testing.assert_array_equal(result['labels']['good.jpg'], [1, 1, 0])


def _labelled_records(out):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  manifest = prepare.read_manifest(str(out))
  found = {}
  for shard in manifest['shards']:
    for record in tf.data.TFRecordDataset(str(out / shard['file'])):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      found[feature['path'].bytes_list.value[0].decode()] = list(
          feature['labels'].int64_list.value)
  return manifest, found


def test_prepare_writes_labels_and_skips_images_without_a_usable_row(
    tmp_path):
  src = tmp_path / 'src'
  (src / 'sub').mkdir(parents=True)
  for index, name in enumerate(['a.png', 'sub/b.png', 'c.png', 'd.png']):
    Image.fromarray(photo(40, 40, seed=index)).save(src / name)
  attr = _write(tmp_path, 'attr.txt', CELEBA_HEADER + (
      'a.png 1 -1 1\n'
      'sub/b.png -1 1 1\n'
      'c.png 1 1\n'            # malformed: c.png is skipped
      'e.png 1 1 1\n'))        # no such image; d.png has no row
  out = tmp_path / 'out'
  manifest = prepare.prepare(str(src), str(out), 32, progress=False,
                             labels=attr)
  assert manifest['written'] == 2
  assert manifest['attributes'] == ['Smiling', 'Male', 'Eyeglasses']
  assert manifest['labels'] == {'matched': 2, 'images_without_labels': 1,
                                'labels_without_images': 1,
                                'malformed_rows': 1}
  assert manifest['attribute_frequencies'] == {
      'Smiling': 0.5, 'Male': 0.5, 'Eyeglasses': 1.0}
  assert ['c.png', 'malformed label row'] in manifest['skipped_files']
  assert ['d.png', 'no label row'] in manifest['skipped_files']
  on_disk, records = _labelled_records(out)
  assert on_disk == json.loads((out / 'manifest.json').read_text())
  assert records == {'a.png': [1, 0, 1], 'sub/b.png': [0, 1, 1]}
  # A changed labels file is another dataset: prepare runs again.
  attr_changed = _write(tmp_path, 'attr.txt', CELEBA_HEADER + (
      'a.png 1 -1 1\nsub/b.png -1 1 1\nc.png 1 1 1\nd.png -1 -1 -1\n'))
  again = prepare.prepare(str(src), str(out), 32, progress=False,
                          labels=attr_changed)
  assert again['written'] == 4 and again['labels']['matched'] == 4


def test_cli_reports_the_label_counts(tmp_path, capsys):
  src = tmp_path / 'src'
  src.mkdir()
  Image.fromarray(photo(40, 40)).save(src / 'a.png')
  attr = _write(tmp_path, 'attr.csv', 'filename,Smiling\na.png,1\nz.png,0\n')
  assert prepare.main([f'--src={src}', f'--out={tmp_path / "out"}',
                       '--resolution=32', '--quiet', f'--labels={attr}']) == 0
  assert ('Labels: 1 attributes; 1 rows matched, 0 images without a row, '
          '0 malformed rows, 1 rows without an image.') in (
              capsys.readouterr().out)
  bad = _write(tmp_path, 'bad.csv', 'filename\n')
  assert prepare.main([f'--src={src}', f'--out={tmp_path / "out2"}',
                       '--resolution=32', '--quiet', f'--labels={bad}']) == 2
  assert 'no attribute names' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'out2')  # Nothing written.


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(CELEBA, 'list_attr_celeba.txt')),
    reason='needs ../shared/data/celeba_10k')
def test_reads_the_real_celeba_attribute_file():
  table = labels.read_labels(os.path.join(CELEBA, 'list_attr_celeba.txt'))
  assert len(table.names) == 40 and 'Smiling' in table.names
  assert len(table.rows) == 10_000 and table.malformed_rows == 0
  assert set(np.unique(np.stack(list(table.rows.values())))) == {0, 1}
