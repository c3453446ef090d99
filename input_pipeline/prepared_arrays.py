"""A prepared folder (input_pipeline.prepare) read whole into numpy arrays.

For tools that need every example at once and in file order rather than a
shuffled training stream: the attribute classifier, and the bank of real
label vectors that a conditional model's samples are drawn with.
"""

import os

import numpy as np

from input_pipeline import prepare


def attribute_names(path: str) -> tuple[str, ...]:
  """The attributes a prepared folder holds labels for (may be empty)."""
  return tuple(prepare.read_manifest(path).get('attributes', ()))


def read_prepared(path: str, with_images: bool = True
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
  """Every example of a prepared folder, in the manifest's shard order.

  Args:
    path: a folder written by `python -m input_pipeline.prepare`.
    with_images: False reads the labels only (much less memory).

  Returns:
    (images uint8 [N, R, R, 3] at the stored resolution or None,
     labels int32 [N, A] of 0/1 in `attribute_names(path)` order, or None
     when the folder was prepared without --labels).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = os.path.expanduser(path)
  manifest = prepare.read_manifest(path)
  size = manifest['resolution']
  num_attributes = len(manifest.get('attributes', ()))
  spec = {'image': tf.io.FixedLenFeature([], tf.string)}
  if num_attributes:
    spec['labels'] = tf.io.FixedLenFeature([num_attributes], tf.int64)
  files = [os.path.join(path, shard['file']) for shard in manifest['shards']]
  images, labels = [], []
  for batch in tf.data.TFRecordDataset(files).batch(1024).map(
      lambda records: tf.io.parse_example(records, spec)).as_numpy_iterator():
    if with_images:
      images.append(np.frombuffer(b''.join(batch['image']), np.uint8).reshape(
          -1, size, size, 3))
    if num_attributes:
      labels.append(batch['labels'].astype(np.int32))
  return (np.concatenate(images) if with_images else None,
          np.concatenate(labels) if num_attributes else None)
