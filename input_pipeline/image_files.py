"""Finding image files in a folder tree and loading one as R x R RGB (PIL).

The dataset tool's worker processes run `load_image`; this module imports no
TensorFlow so they start in a fraction of a second. Every failure becomes a
named skip reason instead of an exception, so one bad file never stops a
70,000-image run.
"""

import errno
import os
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps

from input_pipeline import crops

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif')
FILTERS = {
    'lanczos': Image.Resampling.LANCZOS,
    'box': Image.Resampling.BOX,
    'bilinear': Image.Resampling.BILINEAR,
}
# Skip reasons, as written to manifest.json.
EMPTY = 'empty_file'
UNREADABLE = 'unreadable'
SYMLINK_LOOP = 'symlink_loop'
BROKEN_SYMLINK = 'broken_symlink'
NOT_AN_IMAGE = 'not_an_image'
CORRUPT = 'corrupt'
TOO_MANY_PIXELS = 'too_many_pixels'
TOO_SMALL = 'too_small'
# Warning: kept, but smaller than the target and so upscaled.
UPSCALED = 'upscaled'


def find_images(root: str) -> tuple[list[str], list[tuple[str, str]], int]:
  """Lists the image files under `root`, recursively.

  Directory symlinks are followed once each: a directory reached again (a
  symlink loop) is reported and not entered.

  Args:
    root: folder to walk.

  Returns:
    (paths relative to root with an image extension, sorted so the output
    order never depends on the file system; [(relative path, reason)] for
    folders that could not be walked; number of files ignored because of
    their extension).
  """
  root = os.path.abspath(root)
  images, problems, ignored = [], [], 0
  seen = set()

  def on_error(error: OSError):
    problems.append((os.path.relpath(error.filename, root), UNREADABLE))

  for folder, subfolders, files in os.walk(root, onerror=on_error,
                                           followlinks=True):
    status = os.stat(folder)
    seen.add((status.st_dev, status.st_ino))
    kept = []
    for name in sorted(subfolders):
      path = os.path.join(folder, name)
      try:
        sub = os.stat(path)
      except OSError:
        problems.append((os.path.relpath(path, root), UNREADABLE))
        continue
      if (sub.st_dev, sub.st_ino) in seen:
        problems.append((os.path.relpath(path, root), SYMLINK_LOOP))
      else:
        kept.append(name)
    subfolders[:] = kept
    for name in files:
      if name.lower().endswith(IMAGE_EXTENSIONS):
        images.append(os.path.relpath(os.path.join(folder, name), root))
      else:
        ignored += 1
  images = sorted(path.replace(os.sep, '/') for path in images)
  return images, sorted(problems), ignored


def _os_error_reason(error: OSError) -> str:
  if error.errno == errno.ELOOP:
    return SYMLINK_LOOP
  if error.errno == errno.ENOENT:
    return BROKEN_SYMLINK
  return UNREADABLE


def _to_rgb(image: Image.Image) -> Image.Image:
  """Converts any PIL mode to 8-bit RGB; transparency is laid over white."""
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
    # High bit depth grayscale: PIL's convert('L') clips at 255 instead of
    # scaling, which would turn most 16-bit images white.
    values = np.asarray(image, np.float64)
    if image.mode == 'F':
      scale = 1 / 255 if values.max(initial=0) <= 1 else 1.0
    else:
      scale = 257.0 if values.max(initial=0) > 255 else 1.0
    gray = np.clip(np.round(values / scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert('RGB')
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (
      'transparency' in image.info):
    rgba = image.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert('RGB')
  return image.convert('RGB')


def load_image(path: str, resolution: int, crop: str, resample: str,
               min_size: int = 0, max_pixels: int = 1 << 26
               ) -> tuple[np.ndarray | None, str | None, str]:
  """Loads one file as a square RGB array, or says why it cannot.

  Args:
    path: image file.
    resolution: side R of the output.
    crop: one of crops.CROPS.
    resample: one of FILTERS.
    min_size: skip images whose crop is smaller than this (pixels).
    max_pixels: skip images with more pixels than this, before decoding
      (decompression bombs).

  Returns:
    (image [R, R, 3] uint8 or None, skip reason or warning (UPSCALED) or
    None, the file's PIL mode ('' when unreadable)).
  """
  try:
    if os.stat(path).st_size == 0:
      return None, EMPTY, ''
    with open(path, 'rb') as stream, warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      try:
        image = Image.open(stream)
      except Image.DecompressionBombError:
        return None, TOO_MANY_PIXELS, ''
      mode = image.mode
      if image.width * image.height > max_pixels:
        return None, TOO_MANY_PIXELS, mode
      image.load()
      image = _to_rgb(ImageOps.exif_transpose(image))
  except OSError as error:
    # PIL raises UnidentifiedImageError (an OSError) for non-images and
    # OSError for truncated data; the file system raises the others.
    if isinstance(error, Image.UnidentifiedImageError):
      return None, NOT_AN_IMAGE, ''
    if error.errno is None:
      return None, CORRUPT, ''
    return None, _os_error_reason(error), ''
  except Exception:  # pylint: disable=broad-except
    # Malformed files surface inside PIL's decoders as SyntaxError,
    # ValueError, EOFError, struct.error, IndexError...: whatever one bad
    # file raises, it is that file's problem, never the whole run's.
    return None, CORRUPT, ''
  top, left, height, width = crops.crop_box(float(image.height),
                                            float(image.width), crop)
  side = min(height, width)
  if side < min_size:
    return None, TOO_SMALL, mode
  resized = image.resize((resolution, resolution), FILTERS[resample],
                         box=(left, top, left + width, top + height))
  note = UPSCALED if side < resolution else None
  return np.asarray(resized, np.uint8), note, mode
