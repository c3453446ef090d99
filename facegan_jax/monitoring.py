"""What a run shows: console progress lines, sample grids, TensorBoard.

Scalars and images go through clu's metric writers (TensorBoard event files in
the workdir, written by process 0 only); sample grids are also saved as PNGs
so a run can be watched without TensorBoard.
"""

import math
import os
import time

import jax
import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, padding: int = 1) -> np.ndarray:
  """Tiles images [N, H, W, C] in [-1, 1] into one uint8 image [GH, GW, C].

  The grid is as square as possible; cells are separated by `padding` black
  pixels.
  """
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  grid = np.zeros((rows * (h + padding) + padding,
                   cols * (w + padding) + padding, c), np.uint8)
  for i in range(n):
    top = padding + (i // cols) * (h + padding)
    left = padding + (i % cols) * (w + padding)
    grid[top:top + h, left:left + w] = pixels[i]
  return grid


def save_png(grid: np.ndarray, path: str) -> None:
  """Writes a uint8 [H, W, 3] image atomically (no half-written PNGs)."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  partial = path + '.partial'
  Image.fromarray(grid).save(partial, format='PNG')
  os.replace(partial, path)


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
  """Steps/s and images/s between consecutive log points.

  The caller marks a point only after fetching metrics, which waits for the
  device, so each interval measures finished work.
  """

  def __init__(self, step: int, images_per_step: int):
    self._images_per_step = images_per_step
    self._last_step = step
    self._last_time = time.perf_counter()

  def mark(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    seconds = max(now - self._last_time, 1e-9)
    steps = step - self._last_step
    self._last_step, self._last_time = step, now
    steps_per_s = steps / seconds
    images_per_s = steps_per_s * self._images_per_step
    return {
        'steps_per_s': steps_per_s,
        'images_per_s': images_per_s,
        'sec_per_kimg': 1000.0 / images_per_s if images_per_s else float('inf'),
    }


def progress_line(step: int, num_steps: int, scalars: dict[str, float]) -> str:
  """One console line: step, losses, speed and time left."""
  eta = (num_steps - step) / max(scalars['steps_per_s'], 1e-9)
  return (f'step {step}/{num_steps}  d_loss {scalars["d_loss"]:.4f}  '
          f'g_loss {scalars["g_loss"]:.4f}  '
          f'W {scalars["wasserstein"]:.4f}  penalty {scalars["penalty"]:.4f}  '
          f'{scalars["steps_per_s"]:.2f} steps/s  '
          f'{scalars["images_per_s"]:.1f} img/s  ETA {format_duration(eta)}')


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
