"""Crop policies shared by the dataset tool (PIL) and the TFDS source (TF).

A policy maps an image's (height, width) to the square-ish box that is then
resized to R x R:

- 'center': the largest centred square.
- 'celeba': the usual aligned-CelebA face crop: a centred square whose side
  is 140/178 of the image width, i.e. 140x140 of the 178x218 aligned images
  (pixels 19..159 across, 39..179 down), from hair to chin. Defined as
  fractions of the image, so the half-size 89x109 copies get the same crop
  (70x70 at offset 9.5, 19.5).
- 'none': the whole image, squashed to a square.

Only plain arithmetic here: the functions work on Python floats and on
scalar tf.Tensors alike, and this module imports neither PIL nor TensorFlow.
"""

CROPS = ('center', 'celeba', 'none')

# 140 pixels of the 178-pixel-wide aligned CelebA images.
CELEBA_CROP_FRACTION = 140 / 178


def crop_box(height, width, policy: str, minimum=min):
  """The crop of an image of the given size, as floats.

  Args:
    height: image height in pixels (float or scalar float tensor).
    width: image width in pixels (float or scalar float tensor).
    policy: one of CROPS.
    minimum: elementwise minimum for the argument type (`tf.minimum` for
      tensors).

  Returns:
    (top, left, box_height, box_width); the box may have fractional
    offsets (PIL resamples them exactly; TF rounds them).
  """
  if policy == 'none':
    return 0.0 * height, 0.0 * width, height, width
  if policy == 'center':
    side = minimum(height, width)
  elif policy == 'celeba':
    side = minimum(minimum(width * CELEBA_CROP_FRACTION, height), width)
  else:
    raise ValueError(
        f'Unknown crop {policy!r}; choose one of: {", ".join(CROPS)}.')
  return (height - side) / 2, (width - side) / 2, side, side
