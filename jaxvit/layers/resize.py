"""Image resizing as PyTorch computes it: `F.interpolate(mode="bicubic", align_corners=False)`, no antialias.

Keys' cubic convolution (1981) with PyTorch's a = -0.75 (OpenCV's; PIL and the antialiased path use -0.5),
half-pixel centres, four taps per output pixel whose indices are clamped at the borders; the kernel is not
widened when downsampling. CrossViT (timm's `crossvit.py`, `scale_image`) resizes its input this way for the
second branch (240 -> 224 px). Computed separably, four multiply-adds per output pixel and axis over strided
slices (the taps repeat with the ratio's period): no matmul, so the cost is what PyTorch spends (fvcore counts
none of it), not a dense resize matrix's.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def _cubic_weights(t, a=-0.75):
  """The four tap weights for fractional offsets `t` (taps at -1, 0, 1, 2): `[n] -> [n, 4]`."""
  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _source_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """`(first, weights)`: output pixel i reads input pixels first[i] .. first[i] + 3 (before clamping to the image)
  with `weights[i]` `[4]`.

  PyTorch's source coordinate (in / out) (i + 0.5) - 0.5, not clamped at 0 for cubic, in float32, whose compiled
  kernel fuses the multiply-add (one rounding: a float32 product is exact in float64); a 1-ulp difference in it
  moves a 240 -> 224 resize by 5e-5.
  """
  scale = np.float64(np.float32(in_size / out_size))
  src = (scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
  floor = np.floor(src)
  weights = _cubic_weights((src - floor).astype(np.float64)).astype(np.float32)
  return floor.astype(np.int64) - 1, weights


def bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
  """`(indices, weights)`, each `[out_size, 4]`: output pixel i is sum_k weights[i, k] * input[indices[i, k]],
  the indices clamped to [0, in_size - 1] as PyTorch's."""
  first, weights = _source_taps(in_size, out_size)
  return np.clip(first[:, None] + np.arange(4), 0, in_size - 1), weights


MAX_PERIOD = 64  # longest output period resized with strided slices; longer ones gather


def _resize_axis(x, axis: int, out_size: int):
  in_size = x.shape[axis]
  if in_size == out_size:
    return x
  first, weights = _source_taps(in_size, out_size)
  periods = math.gcd(in_size, out_size)
  p_out, p_in = out_size // periods, in_size // periods  # output r + p_out * j reads input first[r] + p_in * j
  if p_out > MAX_PERIOD or np.any(first[p_out:] != first[:-p_out] + p_in):
    indices, _ = bicubic_taps(in_size, out_size)
    taps = jnp.take(x, jnp.asarray(indices.reshape(-1)), axis=axis)  # [.., out * 4, ..]
    taps = taps.reshape(x.shape[:axis] + (out_size, 4) + x.shape[axis + 1:])
    w = jnp.asarray(weights, x.dtype).reshape((out_size, 4) + (1,) * (x.ndim - axis - 1))
    return (taps * w).sum(axis=axis + 1)
  # edge padding = PyTorch's clamped indices; XLA's CPU gather is ~8x slower than these strided slices
  lo, hi = max(0, -int(first.min())), max(0, int(first.max()) + 4 - in_size)
  x = jnp.pad(x, [(lo, hi) if a == axis else (0, 0) for a in range(x.ndim)], mode="edge")
  phases = []
  for r in range(p_out):  # outputs r, r + p_out, ...: [.., periods, ..]
    y = 0
    for k in range(4):
      start = int(first[r]) + lo + k
      taps = jax.lax.slice_in_dim(x, start, start + p_in * (periods - 1) + 1, stride=p_in, axis=axis)
      y = y + taps * jnp.asarray(weights[r::p_out, k], x.dtype).reshape((periods,) + (1,) * (x.ndim - axis - 1))
    phases.append(y)
  y = jnp.stack(phases, axis=axis + 1)  # [.., periods, p_out, ..]
  return y.reshape(x.shape[:axis] + (out_size,) + x.shape[axis + 1:])


def interpolate_bicubic(images, size: tuple[int, int]):
  """Resizes NHWC `images` to `size` (h, w) as `torch.nn.functional.interpolate(x, size, mode="bicubic",
  align_corners=False)`: rows, then columns (the product of the two axes' weights, as PyTorch's 4 x 4 window)."""
  return _resize_axis(_resize_axis(images, 1, size[0]), 2, size[1])


def resize_bilinear_align_corners(images, size: int):
  """`F.interpolate(mode="bilinear", align_corners=True)` of NHWC `images` to `size x size`: output pixel i reads
  input position i (in - 1) / (size - 1) from its two neighbours, separably, by gathers and weighted sums (no
  matmul: fvcore counts none of it)."""
  for axis in (1, 2):
    n = images.shape[axis]
    src = np.arange(size) * ((n - 1) / (size - 1) if size > 1 else 0.0)
    low = np.minimum(np.floor(src).astype(int), n - 1)
    high = np.minimum(low + 1, n - 1)
    shape = [1, 1, 1, 1]
    shape[axis] = size
    frac = jnp.asarray((src - low).reshape(shape), images.dtype)
    images = jnp.take(images, low, axis=axis) * (1 - frac) + jnp.take(images, high, axis=axis) * frac
  return images
