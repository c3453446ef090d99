"""Procedural face-like images: the built-in offline dataset ('procedural').

Every face is a pure function of (seed, image index): its attributes (face
shape, skin tone, eyes, eyebrows, nose, mouth, hair, glasses, clothes,
background) come from a counter-based hash, so any face can be drawn on its
own, in any order, at any resolution, on any process.

Shapes are signed distance functions in normalized coordinates (x, y in
[-1, 1], y pointing down). A pixel's coverage is clip(0.5 - d / pixel, 0, 1),
which anti-aliases every edge over one pixel at any resolution without
supersampling. Rendering is vectorized over a chunk of faces, and each
feature is evaluated only inside the pixel box that holds it for the chunk,
which is what makes several thousand 64x64 faces per second per core.

Only numpy: the tf.data wrapper lives in sources.py.
"""

from concurrent import futures

import numpy as np

# Faces rendered together; bounded so working arrays stay in cache.
_PIXELS_PER_CHUNK = 32 * 64 * 64

_HAIR_COLORS = np.array([
    (0.08, 0.06, 0.05), (0.20, 0.13, 0.08), (0.35, 0.22, 0.12),
    (0.52, 0.30, 0.15), (0.60, 0.25, 0.10), (0.82, 0.66, 0.38),
    (0.92, 0.82, 0.55), (0.62, 0.60, 0.58), (0.85, 0.85, 0.85),
    (0.45, 0.12, 0.10)], np.float32)
_IRIS_COLORS = np.array([
    (0.30, 0.18, 0.08), (0.18, 0.10, 0.05), (0.25, 0.45, 0.70),
    (0.30, 0.50, 0.30), (0.45, 0.38, 0.18), (0.45, 0.50, 0.55)], np.float32)
_LIGHT_SKIN = np.array((0.97, 0.82, 0.70), np.float32)
_DARK_SKIN = np.array((0.33, 0.20, 0.13), np.float32)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """A strong 64-bit mixing function (uint64 arithmetic wraps on purpose)."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def face_attributes(seed: int, indices: np.ndarray, count: int) -> np.ndarray:
  """Uniform random numbers that define faces.

  Args:
    seed: which family of faces.
    indices: [B] int image indices.
    count: numbers per face.

  Returns:
    [B, count] float32 in [0, 1), a pure function of (seed, index, column).
  """
  with np.errstate(over='ignore'):
    base = _splitmix64(np.full(1, seed, np.uint64))
    keys = _splitmix64(base ^ np.asarray(indices, np.uint64))
    columns = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(
        0xD1B54A32D192ED03)
    bits = _splitmix64(keys[:, None] + columns[None, :])
  return ((bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24))


class _Attributes:
  """Hands out the columns of `face_attributes` one named draw at a time."""

  def __init__(self, uniforms: np.ndarray):
    self._uniforms = uniforms
    self._next = 0

  def uniform(self, low: float, high: float) -> np.ndarray:
    """[B, 1, 1] float32 in [low, high): broadcasts against [B, H, W]."""
    column = self._uniforms[:, self._next]
    self._next += 1
    return (low + (high - low) * column)[:, None, None]

  def chance(self, probability: float) -> np.ndarray:
    """[B, 1, 1] float32, 1.0 with `probability`, else 0.0."""
    return (self.uniform(0, 1) < probability).astype(np.float32)

  def pick(self, palette: np.ndarray, jitter: float) -> np.ndarray:
    """[B, 3] colours: a palette entry, brightness-jittered by +-jitter."""
    index = np.minimum((self.uniform(0, 1)[:, 0, 0] * len(palette)).astype(
        np.int64), len(palette) - 1)
    scale = 1 + self.uniform(-jitter, jitter)[:, 0]
    return np.clip(palette[index] * scale, 0, 1)

  def color(self, low: float, high: float) -> np.ndarray:
    """[B, 3] colour with channels uniform in [low, high)."""
    return np.concatenate([self.uniform(low, high)[:, 0] for _ in range(3)], 1)


def _ellipse(x, y, rx, ry):
  """Approximate signed distance to an axis-aligned ellipse at the origin."""
  inv_rx, inv_ry = 1 / rx, 1 / ry
  xs, ys = x * inv_rx, y * inv_ry
  k0 = np.sqrt(xs * xs + ys * ys)
  xs *= inv_rx
  ys *= inv_ry
  k1 = np.sqrt(xs * xs + ys * ys)
  np.maximum(k1, 1e-6, out=k1)
  k1 = np.divide(k0, k1, out=k1)
  k0 -= 1
  k0 *= k1
  return k0


def _circle(x, y, radius):
  return np.sqrt(x * x + y * y) - radius


def _bar(x, y, center_y, half_width, half_thickness):
  """Distance to a curve y = center_y(x) of the given thickness and extent."""
  return np.maximum(np.abs(y - center_y) - half_thickness,
                    np.abs(x) - half_width)


class _Painter:
  """A float canvas and the pixel boxes features are drawn in."""

  def __init__(self, batch: int, resolution: int):
    self.pixel = np.float32(2.0 / resolution)
    self.coords = ((np.arange(resolution, dtype=np.float32) + 0.5) *
                   self.pixel - 1).astype(np.float32)
    # Planar [3, B, R, R]: blending one contiguous plane at a time is about
    # twice as fast as blending interleaved RGB.
    self.canvas = np.empty((3, batch, resolution, resolution), np.float32)
    self.resolution = resolution

  def box(self, x_low, x_high, y_low, y_high):
    """Pixel slices (rows, cols) covering [x_low, x_high] x [y_low, y_high].

    Bounds are per-face arrays in image coordinates; the box is their union
    plus a two-pixel margin, so coverage is exactly zero outside it and a
    face renders the same whatever chunk it is in.
    """
    def span(low, high):
      first = int(np.floor((np.min(low) + 1) / self.pixel)) - 2
      last = int(np.ceil((np.max(high) + 1) / self.pixel)) + 2
      return slice(max(first, 0), max(min(last, self.resolution), 0))
    return span(y_low, y_high), span(x_low, x_high)

  def grid(self, box):
    """Image coordinates of the pixel centres in `box`: x [1,1,w], y [1,h,1]."""
    rows, cols = box
    return self.coords[None, None, cols], self.coords[None, rows, None]

  def coverage(self, distance):
    alpha = 0.5 - distance * (1 / self.pixel)
    np.minimum(alpha, 1, out=alpha)
    return np.maximum(alpha, 0, out=alpha)

  def paint(self, box, alpha, color):
    """Blends `color` [B, 3] over the canvas with `alpha` [B, h, w]."""
    rows, cols = box
    alpha = np.broadcast_to(alpha, self.canvas.shape[1:2] + alpha.shape[1:])
    for channel in range(3):
      plane = self.canvas[channel, :, rows, cols]
      change = color[:, channel, None, None] - plane
      change *= alpha
      plane += change


class _Face:
  """The face's frame: centre and tilt, and boxes given in face coordinates."""

  def __init__(self, painter, center_x, center_y, tilt):
    self.painter = painter
    self.cx, self.cy = center_x, center_y
    self.cos, self.sin = np.cos(tilt), np.sin(tilt)

  def box(self, x_low, x_high, y_low, y_high):
    """Pixel box holding the face-frame rectangle under the face's tilt."""
    xs = [x_low, x_high, x_low, x_high]
    ys = [y_low, y_low, y_high, y_high]
    gx = [self.cx + x * self.cos - y * self.sin for x, y in zip(xs, ys)]
    gy = [self.cy + x * self.sin + y * self.cos for x, y in zip(xs, ys)]
    return self.painter.box(np.minimum.reduce(gx), np.maximum.reduce(gx),
                            np.minimum.reduce(gy), np.maximum.reduce(gy))

  def grid(self, box):
    """Face-frame coordinates [B, h, w] of the pixel centres in `box`."""
    x, y = self.painter.grid(box)
    dx, dy = x - self.cx, y - self.cy
    return dx * self.cos + dy * self.sin, dy * self.cos - dx * self.sin


def render_faces(indices: np.ndarray, resolution: int, seed: int = 0,
                 workers: int = 1) -> np.ndarray:
  """Draws the faces with the given indices.

  Args:
    indices: [N] int image indices; equal indices give equal faces.
    resolution: side R of the square images.
    seed: which family of faces.
    workers: threads drawing chunks at once (numpy releases the GIL).

  Returns:
    [N, R, R, 3] uint8 RGB images.
  """
  indices = np.asarray(indices, np.int64).reshape(-1)
  chunk = max(1, _PIXELS_PER_CHUNK // (resolution * resolution))
  out = np.empty((len(indices), resolution, resolution, 3), np.uint8)

  def render_chunk(start):
    canvas = _render_chunk(
        face_attributes(seed, indices[start:start + chunk], 96), resolution)
    np.multiply(canvas, 255, out=canvas)
    np.add(canvas, 0.5, out=canvas)
    np.clip(canvas, 0, 255, out=canvas)
    out[start:start + chunk] = np.moveaxis(canvas, 0, -1)

  starts = range(0, len(indices), chunk)
  if workers > 1 and len(starts) > 1:
    with futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(render_chunk, starts))
  else:
    for start in starts:
      render_chunk(start)
  return out


def _render_chunk(uniforms: np.ndarray, resolution: int) -> np.ndarray:
  """[3, B, R, R] float32 in [0, 1] for the faces the uniforms describe."""
  attr = _Attributes(uniforms)
  paint = _Painter(len(uniforms), resolution)
  _, y = paint.grid((slice(None), slice(None)))

  # Background: a vertical gradient between two random colours.
  top, bottom = attr.color(0.15, 0.95), attr.color(0.05, 0.8)
  fade = (y + 1) / 2
  for channel in range(3):
    paint.canvas[channel] = (top[:, channel, None, None] +
                             fade * (bottom - top)[:, channel, None, None])

  # Face frame and shape.
  face = _Face(paint, attr.uniform(-0.07, 0.07), attr.uniform(-0.1, 0.04),
               attr.uniform(-0.12, 0.12))
  half_w = attr.uniform(0.4, 0.5)
  half_h = half_w * attr.uniform(1.18, 1.38)
  jaw = attr.uniform(0.0, 0.35)
  tone = attr.uniform(0, 1)[:, 0]
  skin = _LIGHT_SKIN + tone**1.3 * (_DARK_SKIN - _LIGHT_SKIN)
  skin = np.clip(skin * (1 + attr.uniform(-0.06, 0.06)[:, 0]) +
                 attr.uniform(-0.03, 0.03)[:, 0] * [1, 0, -1], 0, 1)
  skin = skin.astype(np.float32)
  hair = attr.pick(_HAIR_COLORS, 0.15)
  has_hair = 1 - attr.chance(0.07)
  hair_volume = attr.uniform(0.03, 0.13)
  hair_length = attr.uniform(-0.2, 1.5)
  clothes = attr.color(0.05, 0.9)

  # Shoulders, in image coordinates (the body does not tilt with the head).
  shoulder_y = face.cy + half_h + attr.uniform(0.35, 0.5)
  shoulder_rx, shoulder_ry = attr.uniform(0.75, 1.0), 0.5
  box = paint.box(face.cx - shoulder_rx, face.cx + shoulder_rx,
                  shoulder_y - shoulder_ry, shoulder_y + shoulder_ry)
  sx, sy = paint.grid(box)
  paint.paint(box, paint.coverage(
      _ellipse(sx - face.cx, sy - shoulder_y, shoulder_rx, shoulder_ry)),
              clothes)

  # Hair behind the head: a dome, falling to the shoulders when long.
  back_rx = half_w + hair_volume
  back_top = -half_h - hair_volume
  back_bottom = half_h * np.maximum(hair_length, 0.1)
  box = face.box(-back_rx, back_rx, back_top, back_bottom)
  fx, fy = face.grid(box)
  back = _ellipse(fx, fy - (back_top + back_bottom) / 2, back_rx,
                  (back_bottom - back_top) / 2)
  # Long hair is cut straight-ish at the bottom rather than rounded.
  back = np.maximum(back, fy - back_bottom * 0.9)
  paint.paint(box, paint.coverage(back) * has_hair, hair)

  # Neck and ears, a shade darker than the face.
  neck_w = half_w * attr.uniform(0.38, 0.5)
  box = face.box(-neck_w, neck_w, 0, 1.5)
  fx, fy = face.grid(box)
  neck = np.maximum(np.abs(fx) - neck_w, half_h * 0.4 - fy)
  paint.paint(box, paint.coverage(neck), skin * 0.82)
  ear_rx, ear_ry, ear_y = half_w * 0.14, half_h * 0.17, half_h * 0.05
  for side in (-1, 1):
    ear_x = side * half_w * 0.96
    box = face.box(ear_x - ear_rx, ear_x + ear_rx, ear_y - ear_ry,
                   ear_y + ear_ry)
    fx, fy = face.grid(box)
    paint.paint(box, paint.coverage(
        _ellipse(fx - ear_x, fy - ear_y, ear_rx, ear_ry)), skin * 0.9)

  # Face: an egg whose sides narrow towards the chin; edges shaded.
  box = face.box(-half_w, half_w, -half_h, half_h)
  fx, fy = face.grid(box)
  narrowing = 1 - jaw * np.clip(fy / half_h, 0, 1)**2
  face_sdf = _ellipse(fx / narrowing, fy, half_w, half_h)
  face_alpha = paint.coverage(face_sdf)
  paint.paint(box, face_alpha, skin)
  radius2 = (fx / (half_w * narrowing))**2 + (fy / half_h)**2
  paint.paint(box, face_alpha * 0.35 * np.clip(radius2 - 0.45, 0, 1),
              skin * 0.6)

  # Cheeks: a soft blush.
  blush = attr.uniform(0.0, 0.3)
  cheek_x, cheek_y, cheek_r = half_w * 0.55, half_h * 0.25, half_w * 0.22
  for side in (-1, 1):
    box = face.box(side * cheek_x - cheek_r, side * cheek_x + cheek_r,
                   cheek_y - cheek_r, cheek_y + cheek_r)
    fx, fy = face.grid(box)
    r2 = ((fx - side * cheek_x)**2 + (fy - cheek_y)**2) / cheek_r**2
    paint.paint(box, blush * np.clip(1 - r2, 0, 1), np.array(
        [(0.9, 0.35, 0.4)], np.float32))

  # Eyes: white, iris, pupil, highlight, upper lid; and eyebrows.
  eye_x = half_w * attr.uniform(0.34, 0.46)
  eye_y = half_h * attr.uniform(-0.16, 0.0)
  eye_rx = half_w * attr.uniform(0.14, 0.2)
  eye_ry = eye_rx * attr.uniform(0.5, 0.72)
  iris_r = eye_ry * attr.uniform(0.9, 1.1)
  iris = attr.pick(_IRIS_COLORS, 0.2)
  gaze_x = eye_rx * attr.uniform(-0.3, 0.3)
  gaze_y = eye_ry * attr.uniform(-0.15, 0.15)
  brow_gap = eye_ry * attr.uniform(1.4, 2.4)
  brow_arch = half_h * attr.uniform(0.0, 0.05)
  brow_width = eye_rx * attr.uniform(1.0, 1.35)
  brow_thick = half_h * attr.uniform(0.018, 0.045)
  brow_tilt = attr.uniform(-0.25, 0.25)
  brow_color = np.where(has_hair[:, 0], hair * 0.8, skin * 0.35)
  lid = np.array([(0.1, 0.07, 0.06)], np.float32)
  white = np.array([(0.96, 0.96, 0.94)], np.float32)
  black = np.array([(0.03, 0.03, 0.03)], np.float32)
  for side in (-1, 1):
    center = side * eye_x
    box = face.box(center - eye_rx * 1.1, center + eye_rx * 1.1,
                   eye_y - eye_ry * 1.2, eye_y + eye_ry * 1.1)
    fx, fy = face.grid(box)
    ex, ey = fx - center, fy - eye_y
    sclera = _ellipse(ex, ey, eye_rx, eye_ry)
    sclera_alpha = paint.coverage(sclera)
    paint.paint(box, sclera_alpha, white)
    ix, iy = ex - gaze_x, ey - gaze_y
    iris_d = _circle(ix, iy, iris_r)
    paint.paint(box, np.minimum(paint.coverage(iris_d), sclera_alpha), iris)
    pupil = np.maximum(_circle(ix, iy, iris_r * 0.45), sclera)
    paint.paint(box, paint.coverage(pupil), black)
    glint = _circle(ix + iris_r * 0.35, iy + iris_r * 0.35, iris_r * 0.22)
    paint.paint(box, paint.coverage(glint) * 0.9, white)
    upper_lid = np.maximum(np.abs(sclera) - eye_ry * 0.12, ey)
    paint.paint(box, paint.coverage(upper_lid), lid)

    brow_y = eye_y - brow_gap
    box = face.box(center - brow_width, center + brow_width,
                   brow_y - brow_arch - brow_thick * 2 - brow_width * 0.3,
                   brow_y + brow_thick * 2 + brow_width * 0.3)
    fx, fy = face.grid(box)
    bx = fx - center
    along = bx / brow_width
    curve = brow_y - brow_arch * (1 - along**2) + side * brow_tilt * bx * 0.5
    thickness = brow_thick * (1 - 0.4 * np.clip(along * side, 0, 1))
    paint.paint(box, paint.coverage(
        _bar(bx, fy, curve, brow_width, thickness)), brow_color)

  # Glasses, sometimes: round rims and a bridge, sometimes tinted.
  glasses = attr.chance(0.2)
  tinted = attr.chance(0.3) * glasses
  rim_r = eye_rx * attr.uniform(1.25, 1.55)
  rim_t = half_h * attr.uniform(0.012, 0.03)
  frame = attr.color(0.0, 0.45)
  for side in (-1, 1):
    center = side * eye_x
    box = face.box(center - rim_r - rim_t, center + rim_r + rim_t,
                   eye_y - rim_r - rim_t, eye_y + rim_r + rim_t)
    fx, fy = face.grid(box)
    rim = _circle(fx - center, fy - eye_y, rim_r)
    paint.paint(box, paint.coverage(rim) * tinted * 0.55, frame * 0.5)
    paint.paint(box, paint.coverage(np.abs(rim) - rim_t) * glasses, frame)
  bridge_half = np.maximum(eye_x - rim_r, 0.005)
  box = face.box(-bridge_half, bridge_half, eye_y - rim_r * 0.6 - rim_t,
                 eye_y - rim_r * 0.2 + rim_t)
  fx, fy = face.grid(box)
  bridge = _bar(fx, fy, eye_y - rim_r * 0.4, bridge_half, rim_t)
  paint.paint(box, paint.coverage(bridge) * glasses, frame)

  # Nose: a shadow along one side, a tip and two nostrils.
  nose_y = half_h * attr.uniform(0.2, 0.32)
  nose_w = half_w * attr.uniform(0.1, 0.16)
  box = face.box(-nose_w * 2, nose_w * 2, eye_y, nose_y + nose_w)
  fx, fy = face.grid(box)
  ridge = _bar(fx + nose_w * 0.8, fy, (eye_y + nose_y) / 2, nose_w * 0.12,
               (nose_y - eye_y) / 2)
  paint.paint(box, paint.coverage(ridge) * 0.25, skin * 0.5)
  tip = _ellipse(fx, fy - nose_y, nose_w * 1.1, nose_w * 0.6)
  paint.paint(box, paint.coverage(tip) * 0.25, skin * 0.6)
  for side in (-1, 1):
    nostril = _ellipse(fx - side * nose_w * 0.6, fy - nose_y - nose_w * 0.25,
                       nose_w * 0.35, nose_w * 0.2)
    paint.paint(box, paint.coverage(nostril) * 0.7, skin * 0.3)

  # Mouth: lips around a line whose corners rise when smiling.
  mouth_y = half_h * attr.uniform(0.5, 0.62)
  mouth_w = half_w * attr.uniform(0.28, 0.45)
  smile = half_h * attr.uniform(-0.04, 0.1)
  upper = half_h * attr.uniform(0.025, 0.06)
  lower = half_h * attr.uniform(0.035, 0.08)
  opened = half_h * attr.uniform(0.0, 0.06) * attr.chance(0.35)
  lips = skin * 0.55 + attr.color(0.25, 0.4) * [1.6, 0.6, 0.7]
  bend = np.abs(smile)
  box = face.box(-mouth_w, mouth_w, mouth_y - bend - upper - opened,
                 mouth_y + bend + lower + opened)
  fx, fy = face.grid(box)
  along = np.clip(1 - (fx / mouth_w)**2, 0, 1)
  line = mouth_y - smile * (fx / mouth_w)**2
  mid = line + (lower - upper) / 2 * along
  paint.paint(box, paint.coverage(
      _bar(fx, fy, mid, mouth_w, (upper + lower + opened) / 2 * along)),
              np.clip(lips, 0, 1))
  inside = _bar(fx, fy, line, mouth_w * 0.97, (opened / 2 + 0.004) * along)
  paint.paint(box, paint.coverage(inside), np.array([(0.2, 0.05, 0.06)],
                                                   np.float32))

  # Hair in front: the cap above a hairline with a parting and a fringe.
  cap_rx, cap_ry = half_w + hair_volume, half_h + hair_volume * 0.6
  hairline = half_h * attr.uniform(-0.75, -0.35)
  fringe = half_h * attr.uniform(0.0, 0.35)
  parting = half_w * attr.uniform(-0.5, 0.5)
  # At the temples the hair comes down further, framing the face.
  temples = hairline + half_h * 0.6
  box = face.box(-cap_rx, cap_rx, -cap_ry, temples)
  fx, fy = face.grid(box)
  cap = _ellipse(fx, fy, cap_rx, cap_ry)
  dip = np.clip(1 - ((fx - parting) / (half_w * 0.35))**2, 0, 1)
  edge = hairline + fringe * (1 - dip) - half_h * 0.25 * (1 - (fx / cap_rx)**2)
  edge = np.where(np.abs(fx) > half_w * 0.8, temples, edge)
  front = np.maximum(cap, fy - edge)
  paint.paint(box, paint.coverage(front) * has_hair, hair)
  return paint.canvas
