"""Preprocessing ops by name, composed from a string: `"decode|random_resized_crop(32)|flip_lr|normalize"`.

Each op maps a features dict to a features dict inside tf.data. Random ops draw from a stateless
seed that the pipeline derives from (run seed, example position), so a resumed run sees exactly the
augmentations an uninterrupted one would (DESIGN.md, Determinism). The string form follows
big_vision's `pp` mini-language.
"""

import ast
import math

import tensorflow as tf

from jaxvit.registry import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

OPS = {}


def register(fn):
  OPS[fn.__name__] = fn
  return fn


@register
def decode(channels: int = 3):
  """uint8 image -> float32 in [0, 1] with `channels` channels (grey images are repeated)."""
  def op(features, seed):
    image = tf.image.convert_image_dtype(features["image"], tf.float32)
    if image.shape[-1] == 1 and channels == 3:
      image = tf.repeat(image, 3, axis=-1)
    return {**features, "image": image}
  return op


@register
def resize(size: int, method: str = "bilinear", antialias: bool = True):
  """Resizes to `size` x `size`."""
  def op(features, seed):
    image = tf.image.resize(features["image"], (size, size), method=method, antialias=antialias)
    return {**features, "image": image}
  return op


@register
def random_resized_crop(size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), method: str = "bicubic"):
  """Inception-style crop (Szegedy et al. 2015): a random box of `scale` area and `ratio` aspect,
  resized to `size`; timm's `RandomResizedCrop` defaults."""
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

  def op(features, seed):
    image = features["image"]
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    area = tf.random.stateless_uniform([10], seed, scale[0], scale[1]) * h * w
    aspect = tf.exp(tf.random.stateless_uniform([10], tf.random.experimental.stateless_fold_in(seed, 1),
                                                log_ratio[0], log_ratio[1]))
    ch, cw = tf.round(tf.sqrt(area / aspect)), tf.round(tf.sqrt(area * aspect))
    ok = (ch <= h) & (cw <= w) & (ch > 0) & (cw > 0)
    first = tf.argmax(tf.cast(ok, tf.int32))  # first of 10 tries that fits, else the whole image
    ch = tf.where(tf.reduce_any(ok), ch[first], h)
    cw = tf.where(tf.reduce_any(ok), cw[first], w)
    offsets = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(seed, 2))
    top = tf.cast(tf.floor(offsets[0] * (h - ch + 1)), tf.int32)
    left = tf.cast(tf.floor(offsets[1] * (w - cw + 1)), tf.int32)
    crop = tf.image.crop_to_bounding_box(image, top, left, tf.cast(ch, tf.int32), tf.cast(cw, tf.int32))
    return {**features, "image": tf.image.resize(crop, (size, size), method=method, antialias=True)}
  return op


@register
def center_crop(size: int, crop_pct: float = 0.875, method: str = "bicubic"):
  """Resizes the short side to `size / crop_pct`, then takes the central `size` x `size` (timm eval)."""
  def op(features, seed):
    image = features["image"]
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    short = math.floor(size / crop_pct)
    scale = short / tf.minimum(h, w)
    new = tf.cast(tf.round(h * scale), tf.int32), tf.cast(tf.round(w * scale), tf.int32)
    image = tf.image.resize(image, new, method=method, antialias=True)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return {**features, "image": tf.image.crop_to_bounding_box(image, top, left, size, size)}
  return op


@register
def flip_lr():
  """Horizontal flip with probability 1/2."""
  def op(features, seed):
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.image.flip_left_right(features["image"]), lambda: features["image"])
    return {**features, "image": image}
  return op


@register
def normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
  """(image - mean) / std per channel, for images in [0, 1]."""
  def op(features, seed):
    image = (features["image"] - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    return {**features, "image": image}
  return op


def parse(spec: str, defaults: dict | None = None):
  """`"a(1)|b|c(x=2)"` -> one function `(features, seed) -> features` applying the ops in order.

  An op written without arguments takes `defaults[name]` (the trainer passes the model's
  normalisation, so a bare `normalize` uses the mean / std its weights were trained with).
  """
  ops = []
  for i, part in enumerate(p.strip() for p in spec.split("|") if p.strip()):
    try:
      call = ast.parse(part if "(" in part else part + "()", mode="eval").body
      if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
      if not args and not kwargs:
        kwargs = dict((defaults or {}).get(call.func.id, {}))
    except (SyntaxError, ValueError):
      raise ValueError(f"preprocessing op {part!r} is not of the form name(literal, key=literal)") from None
    if call.func.id not in OPS:
      raise ValueError(f"unknown preprocessing op {call.func.id!r}; accepted: {sorted(OPS)}")
    try:
      ops.append((i, OPS[call.func.id](*args, **kwargs)))
    except TypeError as err:
      raise ValueError(f"preprocessing op {part!r}: {err}") from None

  def apply(features, seed):
    for i, op in ops:
      features = op(features, tf.random.experimental.stateless_fold_in(seed, i))
    return features

  return apply


@register
def randaugment(num_layers: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5, prob: float = 0.5):
  """RandAugment as timm's `rand-m{magnitude}-mstd{magnitude_std}-inc1` (jaxvit/data/randaugment.py)."""
  from jaxvit.data.randaugment import rand_augment

  def op(features, seed):
    return {**features, "image": rand_augment(features["image"], seed, num_layers, magnitude, magnitude_std, prob)}
  return op


@register
def random_erase(prob: float = 0.25, min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3):
  """Random Erasing (Zhong et al. 2020, arXiv:1708.04896) as timm's `RandomErasing(mode="pixel")`:
  with probability `prob`, a box of random area and aspect is filled with N(0, 1) noise. Use after
  `normalize`."""
  log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

  def op(features, seed):
    image = features["image"]
    s = [tf.random.experimental.stateless_fold_in(seed, i) for i in range(5)]
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    area = tf.random.stateless_uniform([10], s[0], min_area, max_area) * tf.cast(h * w, tf.float32)
    aspect = tf.exp(tf.random.stateless_uniform([10], s[1], *log_aspect))
    eh = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    ew = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (eh < h) & (ew < w)
    first = tf.argmax(tf.cast(fits, tf.int32))
    eh, ew = eh[first], ew[first]
    top = tf.random.stateless_uniform([], s[2], 0, tf.maximum(h - eh, 1), dtype=tf.int32)
    left = tf.random.stateless_uniform([], s[3], 0, tf.maximum(w - ew, 1), dtype=tf.int32)
    rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
    box = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
    erase = tf.reduce_any(fits) & (tf.random.stateless_uniform([], s[4]) < prob)
    noise = tf.random.stateless_normal(tf.shape(image), tf.random.experimental.stateless_fold_in(seed, 9))
    return {**features, "image": tf.where(erase & box[:, :, None], noise, image)}
  return op
