"""RandAugment (Cubuk et al. 2020, arXiv:1909.13719) on float images in [0, 1], as timm's
`rand-m9-mstd0.5-inc1` that DeiT trains with (timm `auto_augment.py`, the "increasing" op set).

`num_layers` ops are drawn uniformly from 15; each is applied with probability `prob`, at a
magnitude drawn from N(`magnitude`, `magnitude_std`) clipped to [0, 10]. Geometric ops fill with
timm's ImageNet mean colour. All randomness is stateless (seeded by the pipeline).
"""

import math

import tensorflow as tf

FILL = (124 / 255, 116 / 255, 104 / 255)
MAX_LEVEL = 10.0


def _blend(a, b, factor):
  """a + factor (b - a), clipped: PIL's ImageEnhance (factor 0 -> a, 1 -> b)."""
  return tf.clip_by_value(a + factor * (b - a), 0.0, 1.0)


def _grey(image):
  return tf.image.rgb_to_grayscale(image)


def _signed(value, seed):
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -value, value)


def _affine(image, matrix):
  """Applies a 3x3 output->input pixel map (top 8 entries), bilinear, filled with FILL."""
  fill = tf.constant(FILL, tf.float32)
  shape = tf.shape(image)[:2]
  out = tf.raw_ops.ImageProjectiveTransformV3(images=(image - fill)[None], transforms=matrix[None],
                                              output_shape=shape, fill_value=0.0, interpolation="BILINEAR",
                                              fill_mode="CONSTANT")
  return out[0] + fill


def _centred(image, a, b, c, d):
  """The map x_in = A (x_out - centre) + centre with A = [[a, b], [c, d]]."""
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy = (w - 1) / 2, (h - 1) / 2
  return tf.stack([a, b, cx - a * cx - b * cy, c, d, cy - c * cx - d * cy, 0.0, 0.0])


def auto_contrast(image, level, seed):
  lo, hi = tf.reduce_min(image, axis=[0, 1]), tf.reduce_max(image, axis=[0, 1])
  scaled = (image - lo) / tf.maximum(hi - lo, 1e-8)
  return tf.where(hi > lo, scaled, image)


def equalize(image, level, seed):
  """Per-channel histogram equalisation on 256 levels (PIL's ImageOps.equalize)."""
  def channel(c):
    c = tf.cast(tf.round(c * 255), tf.int32)
    hist = tf.histogram_fixed_width(c, [0, 255], nbins=256)
    last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
    step = (tf.reduce_sum(hist) - last) // 255
    lut = tf.clip_by_value(tf.concat([[0], ((tf.cumsum(hist) + step // 2) // tf.maximum(step, 1))[:-1]], 0), 0, 255)
    return tf.cast(tf.where(step == 0, c, tf.gather(lut, c)), tf.float32) / 255
  return tf.stack([channel(image[..., i]) for i in range(3)], axis=-1)


def invert(image, level, seed):
  return 1.0 - image


def rotate(image, level, seed):
  angle = _signed(level / MAX_LEVEL * 30.0, seed) * math.pi / 180
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _affine(image, _centred(image, cos, -sin, sin, cos))


def posterize(image, level, seed):
  shift = 8 - (4 - tf.cast(level / MAX_LEVEL * 4, tf.int32))  # keep 4..0 bits as the level rises
  pixels = tf.cast(tf.round(image * 255), tf.int32)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift), tf.float32) / 255


def solarize(image, level, seed):
  threshold = (256.0 - level / MAX_LEVEL * 256.0) / 255
  return tf.where(image >= threshold, 1.0 - image, image)


def solarize_add(image, level, seed):
  added = tf.minimum(image + tf.floor(level / MAX_LEVEL * 110.0) / 255, 1.0)
  return tf.where(image < 128 / 255, added, image)


def _enhance(degenerate):
  def op(image, level, seed):
    return _blend(degenerate(image), image, 1.0 + _signed(level / MAX_LEVEL * 0.9, seed))
  return op


def _sharp_degenerate(image):
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
  return tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]) + image * tf.pad(tf.zeros_like(smooth), [[1, 1], [1, 1], [0, 0]],
                                                                   constant_values=1.0)


color = _enhance(lambda image: tf.repeat(_grey(image), 3, axis=-1))
contrast = _enhance(lambda image: tf.zeros_like(image) + tf.reduce_mean(_grey(image)))
brightness = _enhance(tf.zeros_like)
sharpness = _enhance(_sharp_degenerate)


def shear_x(image, level, seed):
  return _affine(image, _centred(image, 1.0, _signed(level / MAX_LEVEL * 0.3, seed), 0.0, 1.0))


def shear_y(image, level, seed):
  return _affine(image, _centred(image, 1.0, 0.0, _signed(level / MAX_LEVEL * 0.3, seed), 1.0))


def _translate(axis):
  def op(image, level, seed):
    size = tf.cast(tf.shape(image)[1 - axis], tf.float32)
    shift = _signed(level / MAX_LEVEL * 0.45, seed) * size
    dx, dy = (shift, 0.0) if axis == 0 else (0.0, shift)
    return _affine(image, tf.stack([1.0, 0.0, dx, 0.0, 1.0, dy, 0.0, 0.0]))
  return op


OPS = (auto_contrast, equalize, invert, rotate, posterize, solarize, solarize_add, color, contrast, brightness,
       sharpness, shear_x, shear_y, _translate(0), _translate(1))


def rand_augment(image, seed, num_layers: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                 prob: float = 0.5):
  """Applies `num_layers` random ops to an `[H, W, 3]` float image (clipped to [0, 1] first: bicubic
  resizing overshoots)."""
  image = tf.clip_by_value(image, 0.0, 1.0)
  for layer in range(num_layers):
    s = [tf.random.experimental.stateless_fold_in(seed, 4 * layer + i) for i in range(4)]
    index = tf.random.stateless_uniform([], s[0], 0, len(OPS), dtype=tf.int32)
    level = magnitude + magnitude_std * tf.random.stateless_normal([], s[1]) if magnitude_std else magnitude
    level = tf.clip_by_value(tf.cast(level, tf.float32), 0.0, MAX_LEVEL)
    apply = tf.random.stateless_uniform([], s[2]) < prob
    branches = [lambda op=op: op(image, level, s[3]) for op in OPS]
    image = tf.cond(apply, lambda: tf.switch_case(index, branches), lambda: image)
    image = tf.clip_by_value(tf.ensure_shape(image, image.shape), 0.0, 1.0)
  return image
