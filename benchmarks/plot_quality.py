r"""Plots FID against wall-clock minutes from benchmarks/quality.py's lines.

  python benchmarks/plot_quality.py --out=fid64.png \
      --series="celeba64_cpu.py, seed 0=/tmp/c64_15.jsonl" \
      --title="64x64, 2-core CPU"

Each --series is LABEL=FILE, FILE holding quality.py's JSON lines (one per
time mark, then the final one; a step scored twice is drawn once). Drawn
with Pillow, so it needs nothing beyond the project's dependencies.
"""

import argparse
import json
import math

from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

SIZE = (800, 500)
MARGIN = (70, 40, 30, 55)  # left, top, right, bottom
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def read_series(path: str) -> list[tuple[float, float]]:
  """[(minutes, fid)] by minutes, one point per scored step."""
  points = {}
  with open(path) as lines:
    for line in lines:
      if line.strip():
        row = json.loads(line)
        if row.get('minutes') is not None:
          points[row['steps']] = (row['minutes'], row['fid'])
  return sorted(points.values())


def nice_step(span: float, ticks: int = 6) -> float:
  """A 1, 2 or 5 times a power of ten that cuts `span` into ~`ticks`."""
  raw = span / ticks
  power = 10 ** math.floor(math.log10(raw))
  return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


class Axes:
  """Maps (minutes, fid) to pixels: x from 0, y from 0 to a nice maximum."""

  def __init__(self, series: dict[str, list[tuple[float, float]]]):
    points = [p for values in series.values() for p in values]
    self.x_step = nice_step(max(x for x, _ in points))
    self.y_step = nice_step(max(y for _, y in points))
    self.x_max = math.ceil(max(x for x, _ in points) / self.x_step) * self.x_step
    self.y_max = math.ceil(max(y for _, y in points) / self.y_step) * self.y_step
    left, top, right, bottom = MARGIN
    self.box = (left, top, SIZE[0] - right, SIZE[1] - bottom)

  def __call__(self, x: float, y: float) -> tuple[float, float]:
    x0, y0, x1, y1 = self.box
    return (x0 + (x1 - x0) * x / self.x_max, y1 - (y1 - y0) * y / self.y_max)


def plot(series: dict[str, list[tuple[float, float]]], title: str) -> Image.Image:
  image = Image.new('RGB', SIZE, 'white')
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default(size=14)
  axes = Axes(series)
  x0, y0, x1, y1 = axes.box
  for i in range(round(axes.x_max / axes.x_step) + 1):
    x, _ = axes(i * axes.x_step, 0)
    draw.line([(x, y0), (x, y1)], fill=(225, 225, 225))
    draw.text((x, y1 + 6), f'{i * axes.x_step:g}', fill='black', font=font,
              anchor='mt')
  for i in range(round(axes.y_max / axes.y_step) + 1):
    _, y = axes(0, i * axes.y_step)
    draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
    draw.text((x0 - 6, y), f'{i * axes.y_step:g}', fill='black', font=font,
              anchor='rm')
  draw.rectangle(axes.box, outline='black')
  draw.text(((x0 + x1) / 2, SIZE[1] - 8), 'minutes from launch', fill='black',
            font=font, anchor='md')
  draw.text((8, (y0 + y1) / 2), 'FID', fill='black', font=font, anchor='lm')
  draw.text(((x0 + x1) / 2, 12), title, fill='black', font=font, anchor='mt')
  for i, (label, points) in enumerate(series.items()):
    colour = COLOURS[i % len(COLOURS)]
    pixels = [axes(x, y) for x, y in points]
    if len(pixels) > 1:
      draw.line(pixels, fill=colour, width=2)
    for x, y in pixels:
      draw.ellipse([(x - 4, y - 4), (x + 4, y + 4)], fill=colour)
    draw.text((x1 - 10, y0 + 10 + 20 * i), label, fill=colour, font=font,
              anchor='ra')
  return image


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--series', action='append', required=True,
                      help='LABEL=FILE of quality.py JSON lines')
  parser.add_argument('--out', required=True, help='PNG to write')
  parser.add_argument('--title', default='FID against time')
  args = parser.parse_args(argv)
  series = {}
  for item in args.series:
    label, sep, path = item.rpartition('=')
    if not sep or not label:
      parser.error(f'--series={item!r}: expected LABEL=FILE')
    series[label] = read_series(path)
    if not series[label]:
      parser.error(f'{path}: no scored rows with minutes')
  plot(series, args.title).save(args.out)
  print(args.out)


if __name__ == '__main__':
  main()
