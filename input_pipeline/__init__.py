"""Input pipeline: tf.data datasets of face images for training.

  create_dataset(dataset_config, local_batch_size=..., seed=...)
  validate_dataset_config(dataset_config)
  resolve_attributes(dataset_config), all_labels(dataset_config)

Sources (`dataset.source`): 'procedural' (built-in, offline), 'folder' (made
by `python -m input_pipeline.prepare`) and 'tfds'. DiffAugment runs on the
device inside the train step, so it lives in `facegan_jax.diffaugment`.

Importing this package stays light (no TensorFlow) until one of the
functions above is used: the dataset tool's worker processes import
`input_pipeline.image_files` and must start fast.
"""

_LAZY = ('create_dataset', 'validate_dataset_config', 'resolve_attributes',
         'all_labels')
__all__ = list(_LAZY)


def __getattr__(name: str):
  if name in _LAZY:
    from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
    return getattr(pipeline, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
