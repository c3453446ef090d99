"""What a run shows: console progress lines, sample grids, TensorBoard.

Scalars and images go through clu's metric writers (TensorBoard event files in
the workdir, written by process 0 only); sample grids are also saved as PNGs
so a run can be watched without TensorBoard.
"""

import math
import time

import jax
import numpy as np
from etils import epath
from PIL import Image


def image_grid(images: np.ndarray, padding: int = 1,
               cols: int | None = None) -> np.ndarray:
  """Tiles images [N, H, W, C] into one uint8 image [GH, GW, C].

  Args:
    images: uint8 pixels, or floats in [-1, 1].
    padding: black pixels between and around the cells.
    cols: images per row; default as square a grid as possible.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.clip(np.rint((images.astype(np.float32) + 1.0) * 127.5), 0,
                     255).astype(np.uint8)
  n, h, w, c = images.shape
  cols = cols or math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.zeros((rows * (h + padding) + padding,
                   cols * (w + padding) + padding, c), np.uint8)
  for i in range(n):
    top = padding + (i // cols) * (h + padding)
    left = padding + (i % cols) * (w + padding)
    grid[top:top + h, left:left + w] = images[i]
  return grid


def save_png(grid: np.ndarray, path: epath.PathLike) -> None:
  """Writes a uint8 [H, W, 3] image; on local disks atomically.

  `path` may be on a bucket (epath): the PNG is written through a
  '.partial' file that is then renamed over the final name.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + '.partial')
  with partial.open('wb') as stream:
    Image.fromarray(grid).save(stream, format='PNG')
  partial.replace(path)


def format_duration(seconds: float) -> str:
  """'1h02m', '3m05s', '42s'."""
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m'
  if minutes:
    return f'{minutes}m{secs:02d}s'
  return f'{secs}s'


class ThroughputMeter:
  """Steps/s, images/s and sec/kimg between consecutive marks.

  The loop starts it once the first (compiling) step has finished, and marks
  a point only after fetching metrics, which waits for the device, so each
  interval measures finished work and excludes compilation.
  """

  def __init__(self, images_per_step: int):
    self._images_per_step = images_per_step
    self._last_step = None
    self._last_time = None

  def start(self, step: int) -> None:
    self._last_step, self._last_time = step, time.perf_counter()

  def mark(self, step: int) -> dict[str, float]:
    """Speed since the last mark; {} before start or over an empty interval."""
    if self._last_step is None or step <= self._last_step:
      return {}
    now = time.perf_counter()
    steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    images_per_s = steps_per_s * self._images_per_step
    return {
        'steps_per_s': steps_per_s,
        'images_per_s': images_per_s,
        'sec_per_kimg': 1000.0 / images_per_s,
    }


def progress_line(step: int, num_steps: int, scalars: dict[str, float],
                  seconds_left: float | None = None) -> str:
  """One console line: step, losses, and speed and time left once known.

  `seconds_left`: what remains of a wall-clock budget, which ends the run
  first when it is shorter than the remaining steps take.
  """
  line = (f'step {step}/{num_steps}  d_loss {scalars["d_loss"]:.4f}  '
          f'g_loss {scalars["g_loss"]:.4f}  '
          f'W {scalars["wasserstein"]:.4f}  penalty {scalars["penalty"]:.4f}')
  if 'steps_per_s' not in scalars:
    return line
  eta = (num_steps - step) / scalars['steps_per_s']
  ends = ''
  if seconds_left is not None and seconds_left < eta:
    eta, ends = max(seconds_left, 0.0), ' (time budget)'
  return (f'{line}  {scalars["steps_per_s"]:.2f} steps/s  '
          f'{scalars["images_per_s"]:.1f} img/s  '
          f'ETA {format_duration(eta)}{ends}')


class ProfileWindow:
  """Traces `num_steps` steps for TensorBoard's profile tab.

  Starts after step `first_step - 1` has finished and stops once `num_steps`
  more are done, or at `close()` if the run ends inside the window. The trace
  goes to `logdir/plugins/profile/<run>/`.
  """

  def __init__(self, logdir: str, first_step: int, num_steps: int):
    self._logdir = logdir
    self._first_step = first_step
    self._last_step = first_step + num_steps - 1
    self._running = False

  def __call__(self, step: int, state) -> None:
    """Call after step `step` finished dispatching; `state` is its result."""
    if not self._running and step == self._first_step - 1:
      jax.block_until_ready(state)
      jax.profiler.start_trace(self._logdir)
      self._running = True
    elif self._running and step >= self._last_step:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self._running:
      jax.profiler.stop_trace()
      self._running = False


def device_memory() -> dict[str, float]:
  """Memory in use on this process's first device, in GiB, where reported.

  CPU backends report nothing; GPUs and TPUs report bytes in use and peak.
  """
  stats = jax.local_devices()[0].memory_stats() or {}
  report = {}
  for key, name in (('bytes_in_use', 'memory_in_use_gib'),
                    ('peak_bytes_in_use', 'memory_peak_gib')):
    if key in stats:
      report[name] = stats[key] / 2**30
  return report
