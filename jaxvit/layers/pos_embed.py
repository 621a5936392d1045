"""Absolute position embeddings: learned-grid resampling and fixed 2D sine-cosine tables."""

import numpy as np
import jax.numpy as jnp


def _keys_cubic(x, a=-0.5):
  """Keys' cubic convolution kernel (1981, eq. 15), a = -0.5 as in PIL and PyTorch's antialias path."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = (((x - 5) * x + 8) * x - 4) * a
  return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """`[out_size, in_size]` weights of antialiased bicubic resizing along one axis.

  The same weights as `torch.nn.functional.interpolate(mode="bicubic", antialias=True,
  align_corners=False)` (and PIL): half-pixel centres, a kernel widened by the scale when
  downsampling, clipped at the borders and renormalised to sum to one.
  """
  scale = in_size / out_size
  support = 2.0 * scale if scale >= 1.0 else 2.0
  inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
  weights = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    j = np.arange(lo, hi)
    w = _keys_cubic((j - center + 0.5) * inv_scale)
    weights[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
  return weights


def resample_abs_pos_embed(posemb, new_grid, old_grid=None, num_prefix_tokens=0):
  """Resamples a learned `[1, prefix + h * w, D]` position embedding to `new_grid` (h', w').

  The prefix (class / distillation token) embeddings are kept; the grid part is resized with
  antialiased bicubic interpolation, as timm's `resample_abs_pos_embed`. `old_grid` defaults to
  the square grid the token count implies.
  """
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
  if old_grid is None:
    side = int(round(np.sqrt(grid.shape[1])))
    if side * side != grid.shape[1]:
      raise ValueError(f"cannot infer a square grid from {grid.shape[1]} position tokens; pass old_grid")
    old_grid = (side, side)
  old_grid, new_grid = tuple(old_grid), tuple(new_grid)
  if old_grid == new_grid:
    return posemb
  xp = np if isinstance(posemb, np.ndarray) else jnp
  dim = grid.shape[-1]
  grid = grid.reshape(old_grid[0], old_grid[1], dim).astype(xp.float32)
  wh = bicubic_resize_matrix(old_grid[0], new_grid[0]).astype(np.float32)
  ww = bicubic_resize_matrix(old_grid[1], new_grid[1]).astype(np.float32)
  grid = xp.einsum("ih,jw,hwd->ijd", wh, ww, grid).astype(posemb.dtype)
  return xp.concatenate([prefix, grid.reshape(1, -1, dim)], axis=1)


def sincos_2d(grid, dim: int, temperature: float = 10_000.0):
  """Fixed 2D sine-cosine position embedding `[1, h * w, dim]` (MoCo v3, arXiv:2104.02057).

  A quarter of the channels each hold sin(x w), cos(x w), sin(y w), cos(y w) with frequencies
  w_k = temperature^(-k / (dim/4 - 1)); the form big_vision's `posemb_sincos_2d` uses.
  """
  if dim % 4:
    raise ValueError(f"sincos position embedding needs embed dim divisible by 4, got {dim}")
  h, w = grid
  y, x = np.mgrid[:h, :w]
  omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1))
  y = np.einsum("m,d->md", y.reshape(-1), omega)
  x = np.einsum("m,d->md", x.reshape(-1), omega)
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None].astype(np.float32)
