r"""Uses a trained generator: sample grids and folders, latent walks,
projection of a photo, and export.

Every mode loads the newest checkpoint of --workdir (or --step) and draws
with the EMA generator (--raw: the generator itself). Latent i of --seed is
the same vector in every mode, and the same one evaluation uses, so the
output depends only on (checkpoint, seed, count), never on --batch_size.

  # A grid of 64 faces; the same seed gives the same bytes:
  python -m facegan_jax.generate --workdir=W --num=64 --seed=0 --out=grid.png
  # 10,000 PNGs named by index (e.g. for scoring with evaluate --fake_dir):
  python -m facegan_jax.generate --workdir=W --num=10000 --out_dir=samples/
  # A walk through 6 random faces, 16 frames between each (GIF or WebP, plus
  # a PNG strip beside it):
  python -m facegan_jax.generate --workdir=W --interpolate=16 --num=6 \
      --out=walk.gif
  # The latent whose image best matches a photo (cropped and resized as the
  # run's dataset was):
  python -m facegan_jax.generate --workdir=W --project=photo.jpg --out=proj/
  # The generator as a self-contained StableHLO function (see README):
  python -m facegan_jax.generate --workdir=W --export=exported/

--truncation=PSI (0 < PSI <= 1) pulls latents towards the mean for more
typical faces. Nothing is written when an error stops the command.

A conditional run (trained with --config.dataset.attributes) draws each
image's attributes from its training data's label vectors, like evaluation;
--attributes fixes some of them:

  python -m facegan_jax.generate --workdir=W --out=smiling.png \
      --attributes=Smiling=1,Eyeglasses=1

Every image of --interpolate, --project and --edit takes one label vector
(drawn with --seed, then --attributes applied); a projection searches among
faces with those attributes and records them in projection.json. An export
of a conditional run takes the labels as a second input.

--edit moves latents along an attribute's direction in latent space (fitted
by `python -m facegan_jax.attributes directions`, saved in the run):

  # 16 faces, each 2.0 along the Smiling direction:
  python -m facegan_jax.generate --workdir=W --num=16 --edit=Smiling:+2.0 \
      --out=smiling.png
  # Edit strips: per face 7 strengths from -3 to +3, one row per face (a
  # .gif sweeps them instead); --latent takes a projected photo's latent:
  python -m facegan_jax.generate --workdir=W --num=4 --edit=Smiling:3 \
      --edit_steps=7 --out=strip.png
  python -m facegan_jax.generate --workdir=W --latent=proj/latent.npy \
      --edit=Smiling:3 --edit_steps=7 --out=me_smiling.gif
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from PIL import Image

from facegan_jax import conditioning
from facegan_jax import directions as directions_lib
from facegan_jax import export
from facegan_jax import latents as latents_lib
from facegan_jax import monitoring
from facegan_jax import projection
from facegan_jax import saved_run
from facegan_jax import scoring
from facegan_jax.metrics import inception

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The training run (its --workdir, or its best/ folder).')
_STEP = flags.DEFINE_integer(
    'step', None, 'Checkpoint step to load (default: the newest that loads).')
_RAW = flags.DEFINE_bool(
    'raw', False, 'Use the raw generator instead of its moving average.')
_NUM = flags.DEFINE_integer(
    'num', None, 'Images of the grid or folder (default 64), or keyframes '
    'of an --interpolate walk (default 4).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the latent vectors.')
_OUT = flags.DEFINE_string(
    'out', None, 'Output: the grid PNG; the walk animation (.gif or .webp; '
    'the PNG strip is written beside it); the --project folder.')
_OUT_DIR = flags.DEFINE_string(
    'out_dir', None, 'Write --num individual PNGs (000000.png, ...) here.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Allow writing into a non-empty --out_dir, --project '
    'folder or --export folder.')
_TRUNCATION = flags.DEFINE_float(
    'truncation', 1.0, 'Truncation psi, 0 < psi <= 1: latents are pulled '
    'towards their mean by psi (in w for StyleGAN2, in z otherwise; 1 = '
    'off).')
_INTERPOLATE = flags.DEFINE_integer(
    'interpolate', None, 'Latent walk: K frames between each of --num '
    'keyframes (spherical interpolation).')
_FRAME_MS = flags.DEFINE_integer(
    'frame_ms', 80, 'With --interpolate: milliseconds per animation frame.')
_PROJECT = flags.DEFINE_string(
    'project', None, 'Photo to project into the generator (--out=FOLDER).')
_PROJECT_STEPS = flags.DEFINE_integer(
    'project_steps', projection.ProjectionSettings.steps,
    'With --project: Adam steps.')
_PERCEPTUAL_WEIGHT = flags.DEFINE_float(
    'perceptual_weight', projection.ProjectionSettings.perceptual_weight,
    'With --project: weight of the Inception feature distance (0: pixel MSE '
    'only, no Inception weights needed).')
_PERCEPTUAL_SIZE = flags.DEFINE_integer(
    'perceptual_size', projection.ProjectionSettings.perceptual_size,
    'With --project: side the images are resized to for the Inception '
    '(smaller is faster).')
_WEIGHTS = flags.DEFINE_string(
    'weights', None, 'With --project: FID Inception weights file (default: '
    'search, as evaluate does).')
_EXPORT = flags.DEFINE_string(
    'export', None, 'Export the generator to this folder: generator.stablehlo '
    'and signature.json.')
_SAVED_MODEL = flags.DEFINE_bool(
    'saved_model', False, 'With --export: also a TensorFlow SavedModel '
    '(needs TensorFlow).')
_ATTRIBUTES = flags.DEFINE_string(
    'attributes', None, 'Conditional runs: fix attributes, e.g. '
    '"Smiling=1,Eyeglasses=0"; the others are drawn from the training '
    "data's label vectors.")
_EDIT = flags.DEFINE_string(
    'edit', None, 'NAME:STRENGTH, e.g. "Smiling:+2.0": move every latent '
    'STRENGTH along the direction of attribute NAME (the run\'s '
    'directions.npz, from `python -m facegan_jax.attributes directions`).')
_EDIT_STEPS = flags.DEFINE_integer(
    'edit_steps', None, 'With --edit: an edit strip per face, this many '
    'strengths evenly from -STRENGTH to +STRENGTH (--out .png: one row per '
    'face; .gif or .webp: an animation sweeping them).')
_LATENT = flags.DEFINE_string(
    'latent', None, 'With --edit: edit these latents (.npy of [d] or [N, d], '
    'e.g. the latent.npy of a --project folder) instead of --seed\'s.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 64, 'Images per generator call (does not change the '
    'images).')

ANIMATION_FORMATS = {'.gif': 'GIF', '.webp': 'WEBP'}


class _Generator:
  """The loaded run: latents in, uint8 images out, in fixed-size batches."""

  def __init__(self, workdir: str, step: int | None, use_ema: bool,
               batch_size: int):
    self.config, self.program, self.state, self.meta = saved_run.restore_run(
        workdir, step)
    self.use_ema, self.batch_size = use_ema, batch_size
    self.latent_dim = self.config.model.latent_dim
    self.mesh = scoring.mesh_of(self.program)
    self.offset, self.scale = scoring.pixel_normalization(self.config.dataset)
    self.variables = self.state.generator_variables(use_ema)
    self.label_bank = conditioning.label_bank_of(workdir,
                                                 self.program.attributes)

  def fix_attributes(self, spec: str | None) -> None:
    """Sets attributes ('Smiling=1,Male=0') in every label vector drawn."""
    if not spec:
      return
    if self.label_bank is None:
      raise ValueError('--attributes needs a conditional run (trained with '
                       '--config.dataset.attributes); this one is not.')
    self.label_bank = self.label_bank.copy()
    for item in spec.split(','):
      name, _, value = item.partition('=')
      name = name.strip()
      if name not in self.program.attributes or value.strip() not in ('0',
                                                                       '1'):
        raise ValueError(
            f'--attributes: {item!r} is not NAME=0 or NAME=1 with NAME one '
            f'of the run\'s attributes: {", ".join(self.program.attributes)}.')
      self.label_bank[:, self.program.attributes.index(name)] = int(value)

  def labels(self, seed: int) -> np.ndarray | None:
    """A conditional run's one label vector [A] for `seed` (else None)."""
    if self.label_bank is None:
      return None
    return conditioning.draw_labels(self.label_bank, seed, 1)[0]

  def render(self, seed: int):
    """projection.render_fn of the run, with `labels(seed)`."""
    return projection.render_fn(self.config, self.program, self.state,
                                self.use_ema, self.labels(seed))

  def images(self, z: np.ndarray, truncation: float,
             seed: int = 0) -> np.ndarray:
    """uint8 [N, H, W, 3] of latents [N, d], batch_size at a time (labels
    of a conditional run: one vector drawn with `seed`, for every image)."""
    labels = self.labels(seed)
    if labels is not None:
      labels = np.repeat(labels[None], self.batch_size, axis=0)
    batches = []
    for start in range(0, len(z), self.batch_size):
      batch = z[start:start + self.batch_size]
      padded = np.zeros((self.batch_size, self.latent_dim), np.float32)
      padded[:len(batch)] = batch  # One compiled shape for every batch.
      images = self.program.sample(*self.variables, padded, truncation,
                                   labels)
      batches.append(np.asarray(
          scoring.to_uint8(images, self.offset, self.scale))[:len(batch)])
    return np.concatenate(batches)

  def stream(self, num: int, seed: int, truncation: float):
    """uint8 batches of latents 0..num-1 of `seed` (see scoring)."""
    return scoring.generate_images(
        self.config, self.program, self.state, num, self.batch_size, seed,
        self.use_ema, truncation, self.label_bank)


def _checked_empty(folder: str, overwrite: bool, flag: str) -> None:
  if os.path.isfile(folder):
    raise ValueError(f'--{flag}={folder} is a file; pass a folder.')
  if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
    raise ValueError(f'--{flag}={folder} is not empty; pass an empty or new '
                     'folder, or --overwrite to write into it.')


def write_grid(generator: _Generator, num: int, seed: int, truncation: float,
               out: str) -> None:
  images = np.concatenate(list(generator.stream(num, seed, truncation)))
  monitoring.save_png(monitoring.image_grid(images), out)


def write_folder(generator: _Generator, num: int, seed: int,
                 truncation: float, out_dir: str) -> None:
  """PNGs 000000.png..., with a progress line on stderr."""
  os.makedirs(out_dir, exist_ok=True)
  digits = max(6, len(str(num - 1)))
  done, started, last_report = 0, time.monotonic(), 0.0
  for batch in generator.stream(num, seed, truncation):
    for image in batch:
      monitoring.save_png(image,
                          os.path.join(out_dir, f'{done:0{digits}d}.png'))
      done += 1
    elapsed = time.monotonic() - started
    if done == num or elapsed - last_report >= 2:
      last_report = elapsed
      rate = done / max(elapsed, 1e-9)
      print(f'Generated {done}/{num} images ({rate:.1f} img/s, ETA '
            f'{monitoring.format_duration((num - done) / rate)})',
            file=sys.stderr, flush=True)


def animation_paths(out: str) -> tuple[str, str]:
  """(animation, strip) paths of --out: walk.gif -> walk.gif, walk.png."""
  stem, extension = os.path.splitext(out)
  if extension.lower() not in ANIMATION_FORMATS:
    raise ValueError(f'--out={out}: an --interpolate walk is written as an '
                     'animation; end --out with .gif or .webp.')
  return out, stem + '.png'


def write_walk(generator: _Generator, frames_between: int, keyframes: int,
               seed: int, truncation: float, out: str,
               frame_ms: int) -> None:
  """The animation at `out` and a strip (one row per segment) beside it."""
  animation, strip = animation_paths(out)
  keys = latents_lib.latent_vectors(generator.mesh, seed, keyframes,
                                    generator.latent_dim)
  frames = generator.images(latents_lib.walk(keys, frames_between),
                            truncation, seed)
  row = frames_between + 1
  segments = [frames[i:i + row + 1] for i in range(0, len(frames) - 1, row)]
  monitoring.save_png(
      monitoring.image_grid(np.concatenate(segments), cols=row + 1), strip)
  _save_animation(list(frames), animation, frame_ms)


def write_projection(generator: _Generator, photo: np.ndarray, seed: int,
                     settings: projection.ProjectionSettings,
                     weights_path: str | None, out: str,
                     photo_path: str) -> dict:
  """Projects `photo` and writes target/reconstruction/progress/latent."""
  params = None
  if settings.perceptual_weight > 0:
    from facegan_jax import metrics  # pylint: disable=g-import-not-at-top
    params = metrics.find_weights(weights_path).params
  target = photo.astype(np.float32) / 127.5 - 1
  started = time.monotonic()

  def progress(step, loss):
    if step % max(settings.steps // 20, 1) == 0 or step == settings.steps:
      print(f'Projection step {step}/{settings.steps}  loss {loss:.5f}  '
            f'{monitoring.format_duration(time.monotonic() - started)}',
            file=sys.stderr, flush=True)

  result = projection.project(
      generator.render(seed), target, generator.latent_dim,
      jax.random.PRNGKey(seed), settings, params, progress)
  pixels = lambda x: np.asarray(inception.to_pixels(x[None])[0], np.uint8)
  reconstruction = pixels(result.image)
  summary = {
      'photo': os.path.abspath(photo_path),
      'psnr_db': projection.psnr(reconstruction / 127.5 - 1, target),
      'final_loss': float(result.losses[-1]) if len(result.losses) else None,
      'initial_loss': float(result.losses[0]) if len(result.losses) else None,
      'steps': settings.steps, 'snapshot_steps': list(result.snapshot_steps),
      'latent_norm': float(np.linalg.norm(result.latent)),
  }
  labels = generator.labels(seed)
  if labels is not None:
    # The search's attributes: --edit/--latent with the same --seed (and
    # --attributes) renders the latent with them again.
    summary['attributes'] = dict(zip(generator.program.attributes,
                                     labels.tolist()))
  os.makedirs(out, exist_ok=True)
  monitoring.save_png(photo, os.path.join(out, 'target.png'))
  monitoring.save_png(reconstruction, os.path.join(out, 'reconstruction.png'))
  strip = np.concatenate([np.asarray(inception.to_pixels(result.snapshots),
                                     np.uint8), photo[None]])
  monitoring.save_png(monitoring.image_grid(strip, cols=len(strip)),
                      os.path.join(out, 'progress.png'))
  np.save(os.path.join(out, 'latent.npy'), result.latent)
  with open(os.path.join(out, 'projection.json'), 'w') as stream:
    json.dump(scoring.json_ready(summary), stream, indent=1)
  return summary


def parse_edit(spec: str) -> tuple[str, float]:
  """'Smiling:+2.0' -> ('Smiling', 2.0); ValueError saying the form."""
  name, _, strength = spec.rpartition(':')
  try:
    return name.strip(), float(strength)
  except ValueError:
    raise ValueError(f'--edit={spec!r} is not NAME:STRENGTH (e.g. '
                     'Smiling:+2.0).') from None


def load_direction(workdir: str, name: str) -> np.ndarray:
  """The unit direction [d] of attribute `name` saved with the run."""
  names, directions = directions_lib.load_saved(workdir)
  if name not in names or not np.any(directions[names.index(name)]):
    fitted = [n for n, d in zip(names, directions) if np.any(d)]
    raise ValueError(f'--edit: no direction for {name!r} in {workdir}; '
                     f'fitted: {", ".join(fitted)}.')
  return directions[names.index(name)]


def _edit_latents(generator: _Generator, num: int, seed: int) -> np.ndarray:
  """The latents --edit starts from: --latent's, or latents 0..num-1."""
  if _LATENT.value:
    z = np.load(_LATENT.value).astype(np.float32).reshape(
        -1, generator.latent_dim)
    return z
  return np.asarray(latents_lib.latent_vectors(generator.mesh, seed, num,
                                               generator.latent_dim))


def write_edit(generator: _Generator, spec: str, steps: int | None,
               num: int, seed: int, truncation: float, out: str,
               frame_ms: int) -> dict:
  """Edited faces (a grid), or edit strips (--edit_steps) as PNG or GIF."""
  name, strength = parse_edit(spec)
  direction = load_direction(_WORKDIR.value, name)
  z = _edit_latents(generator, num, seed)
  strengths = (np.linspace(-strength, strength, steps) if steps else
               np.array([strength]))
  # Face-major: face i's strengths are consecutive.
  edited = np.concatenate([directions_lib.edit_latents(face, direction,
                                                       strengths)
                           for face in z])
  images = generator.images(edited, truncation, seed)
  extension = os.path.splitext(out)[1].lower()
  if extension in ANIMATION_FORMATS:
    per_face = images.reshape(len(z), len(strengths), *images.shape[1:])
    frames = [monitoring.image_grid(per_face[:, k])
              for k in range(len(strengths))]
    _save_animation(frames + frames[-2:0:-1], out, frame_ms)  # There and back.
  else:
    monitoring.save_png(monitoring.image_grid(images, cols=len(strengths)),
                        out)
  return {'attribute': name, 'strengths': [float(s) for s in strengths],
          'faces': len(z), 'out': os.path.abspath(out)}


def _save_animation(frames: list[np.ndarray], out: str, frame_ms: int) -> None:
  pictures = [Image.fromarray(frame) for frame in frames]
  partial = out + '.partial'
  pictures[0].save(partial, format=ANIMATION_FORMATS[
      os.path.splitext(out)[1].lower()], save_all=True,
                   append_images=pictures[1:], duration=frame_ms, loop=0)
  os.replace(partial, out)


def _mode() -> str:
  """The one mode the flags ask for; UsageError on a bad combination."""
  modes = [name for name, value in (
      ('out_dir', _OUT_DIR.value), ('interpolate', _INTERPOLATE.value),
      ('project', _PROJECT.value), ('export', _EXPORT.value),
      ('edit', _EDIT.value)) if value is not None]
  if len(modes) > 1:
    raise app.UsageError(f'--{" and --".join(modes)} cannot be combined; '
                         'pick one.')
  mode = modes[0] if modes else 'grid'
  if mode in ('out_dir', 'export') and _OUT.value is not None:
    raise app.UsageError(f'--out is not used with --{mode} (the folder is '
                         f'--{mode}=DIR).')
  if mode in ('grid', 'interpolate', 'project', 'edit') and not _OUT.value:
    raise app.UsageError('Pass --out (see --help).')
  if mode != 'edit' and (_EDIT_STEPS.value is not None or _LATENT.value):
    raise app.UsageError('--edit_steps and --latent go with --edit.')
  if _LATENT.value and _NUM.value is not None:
    raise app.UsageError('--num does not apply with --latent (its latents '
                         'are the faces).')
  if mode in ('project', 'export') and (_TRUNCATION.value != 1 or
                                        _NUM.value is not None):
    raise app.UsageError(f'--truncation and --num do not apply to --{mode}.')
  return mode


def _check_values(mode: str, num: int) -> None:
  latents_lib.check_truncation(_TRUNCATION.value)
  if num < 1:
    raise ValueError(f'--num={num}: pass at least 1.')
  if _BATCH_SIZE.value < 1:
    raise ValueError(f'--batch_size={_BATCH_SIZE.value}: pass at least 1.')
  if mode == 'grid' and os.path.splitext(_OUT.value)[1].lower() != '.png':
    raise ValueError(f'--out={_OUT.value}: the grid is a PNG; end --out '
                     'with .png.')
  if mode == 'out_dir':
    _checked_empty(_OUT_DIR.value, _OVERWRITE.value, 'out_dir')
  if mode == 'edit':
    parse_edit(_EDIT.value)
    extension = os.path.splitext(_OUT.value)[1].lower()
    if extension != '.png' and extension not in ANIMATION_FORMATS:
      raise ValueError(f'--out={_OUT.value}: end it with .png, .gif or '
                       '.webp.')
    if extension in ANIMATION_FORMATS and not _EDIT_STEPS.value:
      raise ValueError('An animation needs --edit_steps (the strengths it '
                       'sweeps).')
    if _EDIT_STEPS.value is not None and _EDIT_STEPS.value < 2:
      raise ValueError(f'--edit_steps={_EDIT_STEPS.value}: pass at least 2.')
    if _LATENT.value and not os.path.isfile(_LATENT.value):
      raise ValueError(f'--latent={_LATENT.value} is not a file.')
  if mode == 'interpolate':
    animation_paths(_OUT.value)
    if _INTERPOLATE.value < 1 or num < 2:
      raise ValueError(f'--interpolate={_INTERPOLATE.value} --num={num}: a '
                       'walk needs --interpolate >= 1 frames between at least '
                       '--num=2 keyframes.')
  if mode == 'project':
    _checked_empty(_OUT.value, _OVERWRITE.value, 'out')
    if _PROJECT_STEPS.value < 1:
      raise ValueError(f'--project_steps={_PROJECT_STEPS.value}: pass at '
                       'least 1.')
  if mode == 'export':
    _checked_empty(_EXPORT.value, _OVERWRITE.value, 'export')


def run(mode: str) -> dict | None:
  num = _NUM.value if _NUM.value is not None else (
      4 if mode == 'interpolate' or _EDIT_STEPS.value else 64)
  _check_values(mode, num)
  generator = _Generator(_WORKDIR.value, _STEP.value, not _RAW.value,
                         _BATCH_SIZE.value)
  print(f'Loaded {_WORKDIR.value} at step {generator.meta["step"]} '
        f'({"raw" if _RAW.value else "EMA"} generator).', file=sys.stderr)
  generator.fix_attributes(_ATTRIBUTES.value)
  seed, psi = _SEED.value, _TRUNCATION.value
  if mode == 'grid':
    write_grid(generator, num, seed, psi, _OUT.value)
  elif mode == 'out_dir':
    write_folder(generator, num, seed, psi, _OUT_DIR.value)
  elif mode == 'edit':
    return write_edit(generator, _EDIT.value, _EDIT_STEPS.value, num, seed,
                      psi, _OUT.value, _FRAME_MS.value)
  elif mode == 'interpolate':
    write_walk(generator, _INTERPOLATE.value, num, seed, psi, _OUT.value,
               _FRAME_MS.value)
  elif mode == 'project':
    photo = projection.load_photo(generator.config, _PROJECT.value)
    settings = projection.ProjectionSettings(
        steps=_PROJECT_STEPS.value, perceptual_weight=_PERCEPTUAL_WEIGHT.value,
        perceptual_size=_PERCEPTUAL_SIZE.value)
    return write_projection(generator, photo, seed, settings, _WEIGHTS.value,
                            _OUT.value, _PROJECT.value)
  else:
    return export.export_generator(
        generator.config, generator.program, generator.state, _EXPORT.value,
        use_ema=not _RAW.value, step=generator.meta['step'],
        saved_model=_SAVED_MODEL.value, overwrite=_OVERWRITE.value)
  return None


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIR.value:
    raise app.UsageError('Pass --workdir=RUN_DIR (see --help).')
  mode = _mode()
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)  # Orbax's notes on every restore.
  try:
    summary = run(mode)
  except (ValueError, FileNotFoundError, export.SavedModelError) as error:
    # Bad flags, checkpoints, photos or missing weights: say what to do.
    sys.exit(f'Error: {error}')
  destination = {'grid': _OUT.value, 'out_dir': _OUT_DIR.value,
                 'interpolate': _OUT.value, 'project': _OUT.value,
                 'export': _EXPORT.value, 'edit': _OUT.value}[mode]
  print(f'Wrote {destination}', file=sys.stderr)
  if summary is not None:
    print(json.dumps(scoring.json_ready(summary)), flush=True)


if __name__ == '__main__':
  app.run(main)
