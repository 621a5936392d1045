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


def parse(spec: str):
  """`"a(1)|b|c(x=2)"` -> one function `(features, seed) -> features` applying the ops in order."""
  ops = []
  for i, part in enumerate(p.strip() for p in spec.split("|") if p.strip()):
    try:
      call = ast.parse(part if "(" in part else part + "()", mode="eval").body
      if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
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
