"""Per-image binary attribute labels: CelebA's list_attr format or a CSV.

CelebA's format (list_attr_celeba.txt): the number of rows, then the
attribute names separated by spaces, then one row per image:
`000001.jpg -1  1  1 -1 ...` with values -1 (off) or 1 (on).

CSV: a header `filename,attr1,attr2,...`, then `path,v1,v2,...` rows with
values 0/1 or -1/1 (-1 and 0 both mean off).

Rows are keyed by the image's path relative to the prepared source folder,
with '/' separators. A row that cannot be read exactly (wrong number of
values, a value outside the format's set, an empty name, a second row for
the same file) is malformed: it is counted and its image gets no label,
never a guessed one.
"""

import csv
import dataclasses
import io

import numpy as np

CELEBA_VALUES = {'-1': 0, '1': 1}
CSV_VALUES = {'-1': 0, '0': 0, '1': 1}


@dataclasses.dataclass(frozen=True)
class LabelTable:
  """The readable rows of a labels file.

  Attributes:
    names: attribute names, in file order.
    rows: {relative path: uint8 [len(names)] vector of 0/1}.
    malformed: {relative path or 'line N': why} of the rows not used.
    malformed_rows: how many rows were not used (two rows for one file are
      two).
  """
  names: tuple[str, ...]
  rows: dict[str, np.ndarray]
  malformed: dict[str, str]
  malformed_rows: int


def _normalize(path: str) -> str:
  path = path.strip().replace('\\', '/')
  return path[2:] if path.startswith('./') else path


def read_labels(path: str) -> LabelTable:
  """Reads CelebA's attribute file or a CSV (by its first line).

  Raises:
    ValueError: the file cannot be read, or its header names no attributes
      (then nothing can be matched; the message says what was expected).
  """
  try:
    with open(path, newline='') as stream:
      text = stream.read()
  except (OSError, UnicodeDecodeError) as error:
    raise ValueError(f'--labels={path!r} cannot be read ({error}).') from None
  lines = text.splitlines()
  if lines and lines[0].strip().isdigit():
    return _read_celeba(path, lines)
  return _read_csv(path, text)


def _header_error(path: str) -> ValueError:
  return ValueError(
      f'--labels={path!r} has no attribute names: expected CelebA\'s '
      'list_attr format (a count line, then the names) or a CSV whose header '
      'is filename,attr1,attr2,...')


def _check_names(path: str, names: list[str]) -> tuple[str, ...]:
  if not names or any(not name for name in names):
    raise _header_error(path)
  if len(set(names)) != len(names):
    duplicated = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f'--labels={path!r} names an attribute twice: '
                     f'{", ".join(duplicated)}.')
  return tuple(names)


def _collect(rows, names, values_map) -> tuple[dict, dict, int]:
  """(rows, malformed, malformed row count) from (line, name, [values])."""
  table, malformed, malformed_rows = {}, {}, 0
  for line_number, name, values in rows:
    name = _normalize(name)
    reason = None
    if not name:
      name, reason = f'line {line_number}', 'no file name'
    elif name in table or name in malformed:
      # Which row is right cannot be known: neither is used.
      malformed_rows += 1 + (table.pop(name, None) is not None)
      malformed[name] = 'more than one row for this file'
      continue
    elif len(values) != len(names):
      reason = (f'{len(values)} values for {len(names)} attributes (line '
                f'{line_number})')
    else:
      bad = [v.strip() for v in values if v.strip() not in values_map]
      if bad:
        reason = (f'value {bad[0]!r} is not one of {", ".join(values_map)} '
                  f'(line {line_number})')
    if reason:
      malformed[name] = reason
      malformed_rows += 1
    else:
      table[name] = np.array([values_map[v.strip()] for v in values],
                             np.uint8)
  return table, malformed, malformed_rows


def _read_celeba(path: str, lines: list[str]) -> LabelTable:
  if len(lines) < 2:
    raise _header_error(path)
  names = _check_names(path, lines[1].split())
  rows = []
  for number, line in enumerate(lines[2:], 3):
    if not line.strip():
      continue
    fields = line.split()
    rows.append((number, fields[0], fields[1:]))
  return LabelTable(names, *_collect(rows, names, CELEBA_VALUES))


def _read_csv(path: str, text: str) -> LabelTable:
  reader = csv.reader(io.StringIO(text))
  header = next(reader, None)
  if not header or len(header) < 2:
    raise _header_error(path)
  names = _check_names(path, [name.strip() for name in header[1:]])
  rows = []
  for number, fields in enumerate(reader, 2):
    if not fields or not any(field.strip() for field in fields):
      continue
    rows.append((number, fields[0], fields[1:]))
  return LabelTable(names, *_collect(rows, names, CSV_VALUES))


def match(table: LabelTable, image_paths: list[str]) -> dict:
  """How the table's rows meet the images (relative paths).

  Returns:
    {'labels': {image path: vector} for the matched images, 'counts':
    {'matched', 'images_without_labels', 'labels_without_images',
    'malformed_rows'}, 'unlabelled': {image path: reason}}. An image whose
    row is malformed counts under malformed_rows only; a row, good or
    malformed, is not counted again under labels_without_images.
  """
  images = set(image_paths)
  labels, unlabelled = {}, {}
  for path in image_paths:
    if path in table.rows:
      labels[path] = table.rows[path]
    elif path in table.malformed:
      unlabelled[path] = 'malformed label row'
    else:
      unlabelled[path] = 'no label row'
  counts = {
      'matched': len(labels),
      'images_without_labels': sum(
          reason == 'no label row' for reason in unlabelled.values()),
      'labels_without_images': sum(row not in images for row in table.rows),
      'malformed_rows': table.malformed_rows,
  }
  return {'labels': labels, 'counts': counts, 'unlabelled': unlabelled}
