"""PoolFormer's token mixer (Yu et al. 2022, arXiv:2111.11418, eq. 4): T' = AvgPool(T) - T.

A `pool_size` x `pool_size` average pool, stride 1, padding `pool_size // 2`, where border windows average only
the pixels they cover (torch's `count_include_pad=False`); the input is subtracted since the block adds it back.
No parameters. timm's `metaformer.py` (`Pooling`) is the file followed.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _window_counts(size: int, pool_size: int) -> np.ndarray:
  """How many of the `pool_size` positions centred on each of `size` positions fall inside."""
  pad = pool_size // 2
  index = np.arange(size)
  return (np.minimum(index + pad, size - 1) - np.maximum(index - pad, 0) + 1).astype(np.float32)


def pooling_mixer(x, pool_size: int = 3):
  """`[B, H, W, C] -> [B, H, W, C]`: the average of each `pool_size`^2 window (over its in-image pixels) minus x.

  One `reduce_window` sum times a trace-time constant of reciprocal window counts (faster on CPU than Flax's
  `avg_pool(count_include_pad=False)`, which pools a tensor of ones for the divisor).
  """
  if pool_size % 2 != 1:
    raise ValueError(f"pooling_mixer: pool_size={pool_size}; accepted: odd sizes (torch pads pool_size // 2)")
  h, w = x.shape[1:3]
  pad = pool_size // 2
  sums = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, (1, pool_size, pool_size, 1), (1, 1, 1, 1),
                               ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  inverse = 1.0 / np.outer(_window_counts(h, pool_size), _window_counts(w, pool_size))
  return sums * jnp.asarray(inverse[:, :, None], x.dtype) - x
