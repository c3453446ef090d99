"""A trained generator as files that run without this project.

  program = train_step.build_program(config, mesh)
  export_generator(config, program, state, '/tmp/face_generator')

writes into the (new or empty) folder:

* `generator.stablehlo`: `jax.export` serialized StableHLO of
  z float32 [N, latent_dim] -> images float32 [N, H, W, 3] in [-1, 1], with a
  symbolic batch size N and the weights baked in as constants. Loading it
  needs jax and numpy only:
  `jax.export.deserialize(data).call(z)`. A conditional run's generator
  also takes its attribute labels, float32 [N, A] of 0/1 in the order of
  signature.json's `attributes`: `.call(z, labels)`.
* `signature.json`: shapes, dtypes, latent distribution, output range,
  attributes, platforms, jax version, the step and the run's config.
* `saved_model/` (optional, `saved_model=True`): a TensorFlow SavedModel
  made by jax2tf with a `serving_default` signature z (and labels) ->
  images; loading it needs TensorFlow only.

Files appear all at once: they are written into a hidden folder next to
`out_dir` and renamed into place, so a failed export leaves `out_dir` as it
was. TensorFlow is imported only for the SavedModel (and, through
`scoring.pixel_normalization`, for runs with `dataset.standardize`).
"""

from collections.abc import Sequence
import json
import logging
import os
import shutil
from typing import Any
import uuid

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facegan_jax import conditioning
from facegan_jax import scoring
from facegan_jax import train_step as train_step_lib

STABLEHLO_FILE = 'generator.stablehlo'
SIGNATURE_FILE = 'signature.json'
SAVED_MODEL_DIR = 'saved_model'
# Everything an export writes; overwrite=True replaces exactly these.
OUTPUT_NAMES = (STABLEHLO_FILE, SAVED_MODEL_DIR, SIGNATURE_FILE)
# Lowering for a platform needs no device of that kind, so one file serves
# CPU, GPU and TPU users.
DEFAULT_PLATFORMS = ('cpu', 'cuda', 'tpu')
BATCH_DIM = 'N'
FORMAT = ('facegan-jax generator export: generator.stablehlo holds '
          'jax.export.Exported.serialize() bytes of images = f(z) with the '
          'weights baked in; load with jax.export.deserialize(bytes).call(z)')
CONDITIONAL_FORMAT = FORMAT.replace('f(z)', 'f(z, labels)').replace(
    'call(z)', 'call(z, labels)')


class SavedModelError(RuntimeError):
  """TensorFlow is missing, or jax2tf cannot convert the generator."""


def export_generator(config: ml_collections.ConfigDict,
                     program: train_step_lib.Program, state: Any,
                     out_dir: str, *, use_ema: bool = True,
                     step: int | None = None, saved_model: bool = False,
                     overwrite: bool = False,
                     platforms: Sequence[str] | None = None) -> dict[str, Any]:
  """Writes the generator of `state` as standalone files into `out_dir`.

  Call it on one process only; every process would write the same files.

  Args:
    config: the run's config (latent size, resolution, normalization); saved
      in signature.json.
    program: from `train_step.build_program(config, mesh)`.
    state: a TrainState (e.g. from `saved_run.restore_run`).
    out_dir: a new or empty folder (created with its parents).
    use_ema: export the EMA generator (else the raw one).
    step: the training step to record; None = `state.step`.
    saved_model: also write a TensorFlow SavedModel (needs TensorFlow).
    overwrite: replace an earlier export's files in a non-empty `out_dir`
      (other files there are kept; a stale saved_model/ is removed).
    platforms: jax.export platforms ('cpu', 'cuda', 'rocm', 'tpu'). None =
      cpu, cuda and tpu, falling back to this machine's platform (with a
      warning) if lowering for any of them fails.

  Returns:
    The contents of signature.json.

  Raises:
    ValueError: `out_dir` is a file, or holds files and overwrite is False.
    SavedModelError: saved_model=True and TensorFlow or jax2tf fails.
  """
  out_dir = os.path.abspath(out_dir)
  _check_out_dir(out_dir, overwrite)
  generate = _generator_fn(config, program, state, use_ema)
  inputs = _input_specs(config.model.latent_dim, len(program.attributes))
  exported = _export(generate, inputs, platforms)
  signature = _signature(config, program.attributes, exported, use_ema,
                         int(state.step) if step is None else int(step))

  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  # Next to out_dir: the same file system, so moving the results in is a
  # rename. os.mkdir, not tempfile.mkdtemp: a new out_dir is this folder
  # renamed, and should get the umask's permissions, not mkdtemp's 0700.
  staging = os.path.join(
      parent, f'.{os.path.basename(out_dir)}.partial-{uuid.uuid4().hex[:8]}')
  os.mkdir(staging)
  try:
    with open(os.path.join(staging, STABLEHLO_FILE), 'wb') as f:
      f.write(exported.serialize())
    if saved_model:
      signature['saved_model'] = _write_saved_model(
          generate, inputs, exported.platforms,
          os.path.join(staging, SAVED_MODEL_DIR))
    with open(os.path.join(staging, SIGNATURE_FILE), 'w') as f:
      json.dump(signature, f, indent=2, allow_nan=False)
      f.write('\n')
    _move_into_place(staging, out_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return signature


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
  """Fails before any work if the export could not be written."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ValueError(f'{out_dir} is a file; pass a new or empty folder.')
  entries = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
  if entries and not overwrite:
    shown = ', '.join(entries[:5]) + (', ...' if len(entries) > 5 else '')
    raise ValueError(
        f'{out_dir} is not empty ({shown}); '
        'pass a new or empty folder, or overwrite=True (--overwrite) to '
        f'replace {", ".join(OUTPUT_NAMES)} there.')


def _generator_fn(config: ml_collections.ConfigDict,
                  program: train_step_lib.Program, state: Any, use_ema: bool):
  """z [N, latent_dim] (and a conditional run's labels [N, A] of 0/1) ->
  float32 images [N, H, W, 3] in [-1, 1].

  The weights are host numpy arrays closed over by the function, so they
  become constants of the exported program instead of inputs, and the
  function carries no sharding of the training mesh.
  """
  params, g_stats = jax.device_get(state.generator_variables(use_ema))
  variables = {'params': params, 'batch_stats': g_stats} if g_stats else {
      'params': params}
  unit_range = _unit_range_fn(config.dataset)

  def generate(z, labels=None):
    # The whole batch in one pass (program.sample's fixed chunks make images
    # batch-independent bit for bit, but would serialize an accelerator).
    images = program.generator.apply(
        variables, conditioning.generator_input(z, labels), train=False)
    return unit_range(images.astype(jnp.float32))
  return generate


def _unit_range_fn(dataset_config: ml_collections.ConfigDict):
  """Model outputs -> [-1, 1] images.

  A generator trained on standardized images produces standardized images;
  users of the export should not need the dataset's statistics, so they are
  undone inside the exported function.
  """
  if not dataset_config.standardize:
    # tanh outputs are in [-1, 1] already; StyleGAN2's have no tanh.
    return lambda images: jnp.clip(images, -1.0, 1.0)
  offset, scale = scoring.pixel_normalization(dataset_config)
  offset = np.asarray(offset, np.float32)
  scale = np.asarray(scale, np.float32)

  def unit_range(images):
    pixels = images / scale + offset  # model image = (pixel - offset) * scale
    return jnp.clip((pixels - 127.5) / 127.5, -1.0, 1.0)
  return unit_range


def _input_specs(latent_dim: int, num_attributes: int) -> dict[str, int]:
  """The exported function's inputs: name -> [N, size] (N symbolic)."""
  specs = {'z': latent_dim}
  if num_attributes:
    specs['labels'] = num_attributes
  return specs


def _export(generate, inputs: dict[str, int],
            platforms: Sequence[str] | None) -> jax.export.Exported:
  """`generate` exported for float32 [N, size] `inputs`, N symbolic."""
  (batch,) = jax.export.symbolic_shape(BATCH_DIM)
  args = [jax.ShapeDtypeStruct((batch, size), jnp.float32)
          for size in inputs.values()]
  if platforms is not None:
    return jax.export.export(jax.jit(generate),
                             platforms=tuple(platforms))(*args)
  try:
    return jax.export.export(jax.jit(generate),
                             platforms=DEFAULT_PLATFORMS)(*args)
  except Exception as error:  # pylint: disable=broad-except
    # A lowering rule missing for some platform should not cost the user the
    # export for the machine they are on.
    logging.warning('Exporting for %s failed (%s: %s); exporting for %s only.',
                    ', '.join(DEFAULT_PLATFORMS), type(error).__name__, error,
                    jax.default_backend())
    return jax.export.export(jax.jit(generate))(*args)


def _signature(config: ml_collections.ConfigDict,
               attributes: Sequence[str], exported: jax.export.Exported,
               use_ema: bool, step: int) -> dict[str, Any]:
  """The contents of signature.json: what a user needs to call the model."""
  latent_dim = config.model.latent_dim
  resolution = config.dataset.resolution
  (output,) = exported.out_avals
  signature = {
      'format': CONDITIONAL_FORMAT if attributes else FORMAT,
      'file': STABLEHLO_FILE,
      'serialization_version': exported.calling_convention_version,
      'input': {'name': 'z', 'shape': [BATCH_DIM, latent_dim],
                'dtype': 'float32'},
      'output': {'name': 'images',
                 'shape': [BATCH_DIM, resolution, resolution, 3],
                 'dtype': str(output.dtype), 'layout': 'NHWC, RGB'},
      'latent_dim': latent_dim,
      'resolution': resolution,
      'latent_distribution': 'standard normal',
      'output_range': [-1, 1],
      'to_uint8': 'round((images + 1) * 127.5), clipped to [0, 255]',
      'platforms': list(exported.platforms),
      'jax_version': jax.__version__,
      'use_ema': use_ema,
      'step': step,
      'saved_model': None,
      'config': scoring.json_ready(config.to_dict()),
      'attributes': list(attributes),  # [] for an unconditional run.
  }
  if attributes:
    signature['labels'] = {
        'name': 'labels', 'shape': [BATCH_DIM, len(attributes)],
        'dtype': 'float32',
        'values': '1 (has the attribute) or 0, in the order of attributes'}
  return signature


def _write_saved_model(generate, inputs: dict[str, int],
                       platforms: Sequence[str], path: str) -> dict[str, Any]:
  """A TensorFlow SavedModel of `generate` at `path`; returns its description.

  Raises:
    SavedModelError: TensorFlow is missing or jax2tf cannot convert; says
      what to do instead.
  """
  try:
    # Only here: the rest of the package must import without TensorFlow.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise SavedModelError(
        f'saved_model=True needs TensorFlow ({error}); pip install tensorflow, '
        'or export without it and load generator.stablehlo with jax.'
    ) from error
  try:
    converted = jax2tf.convert(generate,
                               polymorphic_shapes=['(b, _)'] * len(inputs),
                               with_gradient=False,
                               native_serialization_platforms=tuple(platforms))
    module = tf.Module()
    serve = ((lambda z, labels: {'images': converted(z, labels)})
             if 'labels' in inputs else lambda z: {'images': converted(z)})
    module.generate = tf.function(
        serve, autograph=False,
        input_signature=[tf.TensorSpec([None, size], tf.float32, name=name)
                         for name, size in inputs.items()])
    tf.saved_model.save(module, path, signatures={
        'serving_default': module.generate.get_concrete_function()})
  except Exception as error:  # pylint: disable=broad-except
    raise SavedModelError(
        f'jax2tf could not write the SavedModel (jax {jax.__version__}, '
        f'TensorFlow {tf.__version__}): {type(error).__name__}: {error}\n'
        'Export without saved_model; generator.stablehlo needs only jax.'
    ) from error
  return {'path': SAVED_MODEL_DIR, 'signature': 'serving_default',
          'input': ', '.join(inputs), 'output': 'images',
          'tensorflow_version': tf.__version__}


def _move_into_place(staging: str, out_dir: str) -> None:
  """Renames the finished files from `staging` into `out_dir`.

  A new out_dir is one rename of the whole folder. Into an existing one each
  output is renamed in, the signature last; replaced (and stale) outputs go
  back into `staging`, which the caller deletes.
  """
  if not os.path.exists(out_dir):
    os.rename(staging, out_dir)
    return
  for name in OUTPUT_NAMES:
    new, old = os.path.join(staging, name), os.path.join(out_dir, name)
    if os.path.lexists(old):
      os.rename(old, os.path.join(staging, f'replaced-{name}'))
    if os.path.exists(new):
      os.rename(new, old)
