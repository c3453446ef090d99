r"""Face attributes: a classifier, latent directions, conditional control.

  # 1. A classifier of the prepared dataset's attributes (prepare it with
  #    --labels=list_attr_celeba.txt); 10% of the images are held out:
  python -m facegan_jax.attributes train --data=PREPARED --out=classifier/
  # 2. A latent direction per attribute of a trained (unconditional) run,
  #    written to W/directions.npz and W/directions.json:
  python -m facegan_jax.attributes directions --workdir=W \
      --classifier=classifier/ --num=5000
  # 3. How often a conditional run draws the attributes it is asked for:
  python -m facegan_jax.attributes score --workdir=W --classifier=classifier/

Each prints progress on stderr and one JSON line on stdout. The classifier's
held-out accuracy (step 1) is the ceiling of what steps 2 and 3 can measure;
an attribute it reads no better than always answering the common value
(`baseline_accuracy`) says nothing about samples. Nothing is written when an
error stops the command.

`directions` draws latent i of --seed as every tool does (see
facegan_jax/latents.py; a conditional run's sample i also takes label
vector i of its bank), labels its image with the classifier and fits one
plane per attribute (facegan_jax/directions.py): z + s * direction shows
more of the attribute for s > 0. A run that draws larger images than the
classifier reads is area-averaged down; train the classifier with
--resolution=R for a run of R x R images from data prepared larger.
"""

import json
import os
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

from facegan_jax import attribute_classifier
from facegan_jax import directions as directions_lib
from facegan_jax import monitoring
from input_pipeline import prepared_arrays

SUBCOMMANDS = ('train', 'directions', 'score')
DIRECTIONS_NPZ = directions_lib.DIRECTIONS_FILE
DIRECTIONS_JSON = 'directions.json'

_DATA = flags.DEFINE_string(
    'data', None, 'train: a prepared folder with labels (python -m '
    'input_pipeline.prepare ... --labels=list_attr_celeba.txt).')
_OUT = flags.DEFINE_string(
    'out', None, 'train: the classifier folder to write (new or empty).')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'train: allow writing into a non-empty --out.')
_RESOLUTION = flags.DEFINE_integer(
    'resolution', None, 'train: side the classifier reads (default the '
    'prepared one; smaller ones are area-averaged down). Use the resolution '
    'of the runs it will judge.')
_STEPS = flags.DEFINE_integer(
    'steps', attribute_classifier.DEFAULT_STEPS, 'train: Adam updates.')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 1e-3,
                                    'train: Adam learning rate.')
_FLIP = flags.DEFINE_bool(
    'flip', True, 'train: mirror a random half of each batch left-right '
    '(--noflip: attributes that a mirror changes).')
_HELDOUT_FRACTION = flags.DEFINE_float(
    'heldout_fraction', 0.1, 'train: share of the images held out to measure '
    'the accuracy (a seeded permutation\'s last part).')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'directions, score: the training run (its --workdir, or '
    'its best/ folder).')
_CLASSIFIER = flags.DEFINE_string(
    'classifier', None, 'directions, score: a folder written by `train`.')
_STEP = flags.DEFINE_integer(
    'step', None, 'directions, score: checkpoint step (default the newest).')
_RAW = flags.DEFINE_bool(
    'raw', False, 'directions, score: the raw generator instead of its '
    'moving average.')
_NUM = flags.DEFINE_integer(
    'num', None, 'directions: samples to label and fit (default 5000); '
    'score: latents per attribute, each drawn with the attribute on and off '
    '(default 500).')
_MIN_PER_CLASS = flags.DEFINE_integer(
    'min_per_class', directions_lib.MIN_PER_CLASS, 'directions: attributes '
    'with fewer samples that have, or lack, them are skipped.')
_SEED = flags.DEFINE_integer(
    'seed', 0, 'train: held-out split, initialization and batch order; '
    'directions, score: the latent stream (and score\'s label draws).')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 64, 'train: images per update; directions, score: images '
    'per generator call (does not change the images).')

# The flags each subcommand reads; any other one given is a mistake.
_FLAGS_OF = {
    'train': ('data', 'out', 'overwrite', 'resolution', 'steps',
              'learning_rate', 'heldout_fraction', 'flip', 'seed',
              'batch_size'),
    'directions': ('workdir', 'classifier', 'step', 'raw', 'num',
                   'min_per_class', 'seed', 'batch_size'),
    'score': ('workdir', 'classifier', 'step', 'raw', 'num', 'seed',
              'batch_size'),
}
_REQUIRED = {'train': ('data', 'out'), 'directions': ('workdir', 'classifier'),
             'score': ('workdir', 'classifier')}
_ALL_OURS = sorted({name for names in _FLAGS_OF.values() for name in names})


def _rounded(names, values) -> dict[str, float | None]:
  """{name: value to 4 places}, None for NaN (valid JSON)."""
  return {name: None if np.isnan(value) else round(float(value), 4)
          for name, value in zip(names, values)}


def _checked_out(out: str, overwrite: bool) -> None:
  if os.path.isfile(out):
    raise ValueError(f'--out={out} is a file; pass a folder.')
  if os.path.isdir(out) and os.listdir(out) and not overwrite:
    raise ValueError(f'--out={out} is not empty; pass an empty or new folder, '
                     'or --overwrite to write into it.')


# --- train -------------------------------------------------------------------


def read_labelled(data: str, resolution: int | None
                  ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(images uint8 [N, R, R, 3], labels [N, A], names) of a prepared folder.

  Raises:
    ValueError: the folder is not prepared, or has no labels (says how to
      prepare it with them).
  """
  names = prepared_arrays.attribute_names(data)
  if not names:
    raise ValueError(
        f'{data} was prepared without attribute labels. Prepare it again '
        'with them:\n  python -m input_pipeline.prepare --src=IMAGES_DIR '
        f'--out={data} --resolution=64 --crop=celeba '
        '--labels=list_attr_celeba.txt')
  images, labels = prepared_arrays.read_prepared(data)
  if resolution is not None:
    images = attribute_classifier.downscale(images, resolution)
  return images, labels, names


def _progress_printer(steps: int):
  started = time.monotonic()
  every = max(steps // 20, 1)

  def progress(step: int, loss) -> None:
    if step % every and step != steps:
      return
    elapsed = time.monotonic() - started
    rate = step / max(elapsed, 1e-9)
    print(f'Step {step}/{steps}  loss {float(loss):.4f}  {rate:.1f} steps/s'
          f'  ETA {monitoring.format_duration((steps - step) / rate)}',
          file=sys.stderr, flush=True)

  return progress


def run_train(data: str, out: str, *, overwrite: bool = False,
              resolution: int | None = None, **settings) -> dict[str, Any]:
  """Trains and saves a classifier of `data`'s attributes; the summary.

  Args:
    data: a prepared folder with labels.
    out: the classifier folder (refused when not empty, unless overwrite).
    overwrite: allow a non-empty `out`.
    resolution: downscale the images to this side first.
    **settings: keyword arguments of `attribute_classifier.train_classifier`
      (steps, batch_size, learning_rate, seed, heldout_fraction, flip).
  """
  _checked_out(out, overwrite)
  images, labels, names = read_labelled(data, resolution)
  print(f'Read {len(images)} images of {images.shape[1]}x{images.shape[2]} '
        f'with {len(names)} attributes from {data}.', file=sys.stderr)
  classifier, report = attribute_classifier.train_classifier(
      images, labels, names, progress=_progress_printer(
          settings.get('steps', attribute_classifier.DEFAULT_STEPS)),
      **settings)
  report['data'] = os.path.abspath(os.path.expanduser(data))
  attribute_classifier.save(classifier, out, report)
  keys = ('heldout_accuracy', 'baseline_accuracy', 'mean_accuracy',
          'mean_baseline_accuracy', 'num_train', 'num_heldout',
          'train_seconds')
  return dict({key: report[key] for key in keys},
              classifier=os.path.abspath(out),
              resolution=classifier.resolution)


# --- directions and score: a saved run ---------------------------------------


class _Run:
  """A restored run that draws uint8 images at a classifier's resolution."""

  def __init__(self, workdir: str, step: int | None, use_ema: bool,
               batch_size: int, resolution: int):
    # Loading a run imports Orbax and the models: only the subcommands that
    # need one pay for it.
    # pylint: disable=g-import-not-at-top
    from facegan_jax import conditioning
    from facegan_jax import latents as latents_lib
    from facegan_jax import saved_run
    from facegan_jax import scoring
    # pylint: enable=g-import-not-at-top
    self._conditioning, self._latents, self._scoring = (
        conditioning, latents_lib, scoring)
    self.config, self.program, self.state, self.meta = saved_run.restore_run(
        workdir, step)
    self.attributes = conditioning.conditioned_attributes(self.config)
    # A conditional run draws sample i with label vector i of its bank's
    # stream (conditioning.draw_labels), as every tool does.
    self.label_bank = conditioning.label_bank_of(workdir, self.attributes)
    self.use_ema, self.batch_size = use_ema, batch_size
    self.latent_dim = self.config.model.latent_dim
    self.resolution = resolution
    run_size = self.config.dataset.resolution
    if run_size < resolution or run_size % resolution:
      raise ValueError(
          f'{workdir} draws {run_size}x{run_size} images and the classifier '
          f'reads {resolution}x{resolution} ones; train a classifier at the '
          f'run\'s resolution (python -m facegan_jax.attributes train '
          f'--data=... --resolution={run_size} --out=...).')

  def latents(self, num: int, seed: int) -> np.ndarray:
    """Latents 0..num-1 of `seed`: float32 [num, d]."""
    return self._latents.latent_vectors(self._scoring.mesh_of(self.program),
                                        seed, num, self.latent_dim)

  def label_vectors(self, num: int, seed: int) -> np.ndarray:
    """Label vectors 0..num-1 of `seed` (conditional runs): float32 [num, A]."""
    return self._conditioning.draw_labels(self.label_bank, seed, num)

  def stream(self, num: int, seed: int):
    """uint8 batches of latents 0..num-1's images (the shared stream)."""
    for images in self._scoring.generate_images(
        self.config, self.program, self.state, num, self.batch_size, seed,
        self.use_ema, label_bank=self.label_bank):
      yield attribute_classifier.downscale(images, self.resolution)

  def images(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """uint8 [N, r, r, 3] of latents [N, d] and 0/1 labels [N, A] (None for
    an unconditional run)."""
    variables = self.state.generator_variables(self.use_ema)
    offset, scale = self._scoring.pixel_normalization(self.config.dataset)
    batches = []
    for start in range(0, len(z), self.batch_size):
      size = min(self.batch_size, len(z) - start)
      # One compiled shape for every batch: pad the last one.
      padded_z = np.zeros((self.batch_size, self.latent_dim), np.float32)
      padded_z[:size] = z[start:start + size]
      padded_labels = None
      if labels is not None:
        padded_labels = np.zeros((self.batch_size, labels.shape[1]),
                                 np.float32)
        padded_labels[:size] = labels[start:start + size]
      images = self.program.sample(*variables, padded_z, 1.0,
                                   labels=padded_labels)
      batches.append(np.asarray(self._scoring.to_uint8(
          images, offset, scale))[:size])
    return attribute_classifier.downscale(np.concatenate(batches),
                                          self.resolution)


def _label_samples(run: _Run, classifier, num: int, seed: int) -> np.ndarray:
  """The classifier's 0/1 answers [num, A] on images 0..num-1 of `seed`."""
  answers, done, started, last_report = [], 0, time.monotonic(), 0.0
  for images in run.stream(num, seed):
    answers.append(attribute_classifier.predict_probabilities(
        classifier, images) > 0.5)
    done += len(images)
    elapsed = time.monotonic() - started
    if done == num or elapsed - last_report >= 2:
      last_report = elapsed
      print(f'Labelled {done}/{num} samples '
            f'({monitoring.format_duration(elapsed)})', file=sys.stderr,
            flush=True)
  return np.concatenate(answers).astype(np.int32)


def _write_directions(folder: str, fit: directions_lib.DirectionFit,
                      summary: dict[str, Any]) -> None:
  """directions.npz and directions.json in `folder`, each replaced whole."""
  path = os.path.join(folder, DIRECTIONS_NPZ)
  with open(path + '.tmp', 'wb') as stream:
    np.savez(stream, directions=fit.directions, names=np.array(fit.names),
             heldout_accuracy=fit.heldout_accuracy,
             fit_accuracy=fit.fit_accuracy,
             baseline_accuracy=fit.baseline_accuracy, positives=fit.positives)
  os.replace(path + '.tmp', path)
  with open(os.path.join(folder, DIRECTIONS_JSON + '.tmp'), 'w') as stream:
    json.dump(summary, stream, indent=1)
  os.replace(os.path.join(folder, DIRECTIONS_JSON + '.tmp'),
             os.path.join(folder, DIRECTIONS_JSON))


def run_directions(workdir: str, classifier_dir: str, *, num: int = 5000,
                   seed: int = 0, step: int | None = None,
                   use_ema: bool = True, batch_size: int = 64,
                   min_per_class: int = directions_lib.MIN_PER_CLASS
                   ) -> dict[str, Any]:
  """Labels `num` samples of a run, fits and saves a direction per attribute.

  Returns:
    The summary also written to WORKDIR/directions.json: step, latent_dim,
    num_samples, seed, use_ema, classifier, fitted and skipped attributes,
    per-attribute heldout/fit/baseline accuracy and positives.
  """
  if num < 2 or batch_size < 1:
    raise ValueError(f'--num={num}, --batch_size={batch_size}: pass at least '
                     '2 samples and 1 per batch.')
  classifier, description = attribute_classifier.load(classifier_dir)
  run = _Run(workdir, step, use_ema, batch_size, classifier.resolution)
  print(f'Loaded {workdir} at step {run.meta["step"]}; labelling {num} '
        'samples.', file=sys.stderr)
  labels = _label_samples(run, classifier, num, seed)
  fit = directions_lib.fit_directions(
      run.latents(num, seed), labels, classifier.names,
      min_per_class=min_per_class)
  names = fit.names
  summary = {
      'step': int(run.meta['step']), 'latent_dim': run.latent_dim,
      'num_samples': num, 'seed': seed, 'use_ema': use_ema,
      'classifier': os.path.abspath(os.path.expanduser(classifier_dir)),
      'classifier_heldout_accuracy': description['report'].get(
          'heldout_accuracy'),
      'fitted': [n for n in names if n not in fit.skipped],
      'skipped': fit.skipped,
      'heldout_accuracy': _rounded(names, fit.heldout_accuracy),
      'fit_accuracy': _rounded(names, fit.fit_accuracy),
      'baseline_accuracy': _rounded(names, fit.baseline_accuracy),
      'positives': {n: int(p) for n, p in zip(names, fit.positives)},
      # A conditional run's samples carry label vectors drawn from its bank:
      # those attributes follow the labels more than z.
      'conditioned_attributes': list(run.attributes),
  }
  summary['directions'] = os.path.abspath(
      os.path.join(workdir, DIRECTIONS_NPZ))
  _write_directions(workdir, fit, summary)
  return summary


def _control(run: _Run, classifier, z: np.ndarray, rows: np.ndarray,
             column: int, attribute: str) -> tuple[float, float]:
  """(share read as on when asked on, share read as off when asked off)."""
  index = classifier.names.index(attribute)
  shares = []
  for value in (1, 0):
    labels = rows.copy()
    labels[:, column] = value
    said = attribute_classifier.predict_probabilities(
        classifier, run.images(z, labels))[:, index] > 0.5
    shares.append(float((said == bool(value)).mean()))
  return shares[0], shares[1]


def run_score(workdir: str, classifier_dir: str, *, num: int = 500,
              seed: int = 0, step: int | None = None, use_ema: bool = True,
              batch_size: int = 64) -> dict[str, Any]:
  """How often a conditional run draws each attribute as asked.

  For each conditioned attribute, `num` label vectors are drawn from the
  run's label bank (real combinations of attributes) and each latent of
  `seed` is drawn twice: with the attribute set on and set off, the rest of
  its vector unchanged. control_accuracy is the share of those images the
  classifier reads as asked; the classifier's own held-out accuracy is the
  ceiling it can reach.
  """
  if num < 1 or batch_size < 1:
    raise ValueError(f'--num={num}, --batch_size={batch_size}: pass at least '
                     '1.')
  classifier, description = attribute_classifier.load(classifier_dir)
  run = _Run(workdir, step, use_ema, batch_size, classifier.resolution)
  attributes = run.attributes
  if not attributes:
    raise ValueError(
        f'{workdir} is an unconditional run: it cannot be asked for '
        'attributes. Find latent directions for them instead:\n  python -m '
        f'facegan_jax.attributes directions --workdir={workdir} '
        f'--classifier={classifier_dir}')
  missing = [a for a in attributes if a not in classifier.names]
  if missing:
    raise ValueError(f'The classifier does not read {", ".join(missing)}; '
                     'train it on data labelled with every attribute the run '
                     'is conditioned on.')
  # Label vector i of the seed's stream, as generate and evaluate draw them.
  rows = run.label_vectors(num, seed)
  z = run.latents(num, seed)
  when_on, when_off = {}, {}
  for column, attribute in enumerate(attributes):
    when_on[attribute], when_off[attribute] = _control(
        run, classifier, z, rows, column, attribute)
    print(f'{attribute}: read as asked in {when_on[attribute]:.1%} of the '
          f'"on" and {when_off[attribute]:.1%} of the "off" images.',
          file=sys.stderr, flush=True)
  control = {a: round((when_on[a] + when_off[a]) / 2, 4) for a in attributes}
  ceiling = description['report'].get('heldout_accuracy', {})
  known = [ceiling[a] for a in attributes if a in ceiling]
  return {
      'step': int(run.meta['step']), 'num_latents': num, 'seed': seed,
      'use_ema': use_ema,
      'classifier': os.path.abspath(os.path.expanduser(classifier_dir)),
      'control_accuracy': control,
      'when_on': {a: round(v, 4) for a, v in when_on.items()},
      'when_off': {a: round(v, 4) for a, v in when_off.items()},
      'mean_control_accuracy': round(float(np.mean(list(control.values()))),
                                     4),
      'classifier_accuracy': {a: ceiling.get(a) for a in attributes},
      'mean_classifier_accuracy': (round(float(np.mean(known)), 4)
                                   if known else None),
  }


# --- Command line ------------------------------------------------------------


def _subcommand(argv: list[str]) -> str:
  """The subcommand; UsageError on a missing one or a flag it does not use."""
  if len(argv) != 2 or argv[1] not in SUBCOMMANDS:
    given = ' '.join(argv[1:]) or 'nothing'
    raise app.UsageError(f'Pass one subcommand: {", ".join(SUBCOMMANDS)} '
                         f'(got {given}; see --help).')
  command = argv[1]
  for name in _ALL_OURS:
    if flags.FLAGS[name].present and name not in _FLAGS_OF[command]:
      raise app.UsageError(f'--{name} does not apply to {command}.')
  missing = [name for name in _REQUIRED[command]
             if not flags.FLAGS[name].value]
  if missing:
    raise app.UsageError(f'{command} needs --{" and --".join(missing)} (see '
                         '--help).')
  return command


def run(command: str) -> dict[str, Any]:
  """Runs `command` with the flags' values; its JSON summary."""
  if command == 'train':
    return run_train(
        _DATA.value, _OUT.value, overwrite=_OVERWRITE.value,
        resolution=_RESOLUTION.value, steps=_STEPS.value,
        batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
        seed=_SEED.value, heldout_fraction=_HELDOUT_FRACTION.value,
        flip=_FLIP.value)
  common = dict(seed=_SEED.value, step=_STEP.value, use_ema=not _RAW.value,
                batch_size=_BATCH_SIZE.value)
  if command == 'directions':
    return run_directions(_WORKDIR.value, _CLASSIFIER.value,
                          num=5000 if _NUM.value is None else _NUM.value,
                          min_per_class=_MIN_PER_CLASS.value, **common)
  return run_score(_WORKDIR.value, _CLASSIFIER.value,
                   num=500 if _NUM.value is None else _NUM.value, **common)


def main(argv: list[str]) -> None:
  command = _subcommand(argv)
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)  # Orbax's notes on every restore.
  try:
    summary = run(command)
  except (ValueError, FileNotFoundError) as error:
    # Bad flags, folders or checkpoints: say what to do, no traceback.
    sys.exit(f'Error: {error}')
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  app.run(main)
