"""The global filter layer of GFNet (Rao et al. 2021, arXiv:2107.00645, Sec. 3.2): token mixing in the frequency
domain, in place of self-attention.

    X = F[x],   X~ = K (.) X,   x <- F^-1[X~]

`F` is the 2D discrete Fourier transform over the `h x w` token grid (per channel), `K` a learnable complex filter
of shape `[h, w // 2 + 1, C]` (the grid's real-input half spectrum: the other half is its conjugate, so `F^-1` of
the product is real) and `(.)` the element-wise product. It equals a circular convolution of each channel with a
global `h x w` kernel, at O(hwC log hw) cost. The official `gfnet.py` (raoyongming/GFNet) is the file followed:
`rfft2` / `irfft2` with `norm="ortho"`, the filter stored as `complex_weight` `[h, w // 2 + 1, C, 2]` (real,
imaginary), computed in float32.

The filter is sized for one grid. GFNet's fine-tuning at another resolution (`main_gfnet.py`) resizes it once with
bicubic interpolation (`align_corners=True`) to `[h', h' // 2 + 1]`; `resize_global_filter` does the same. Applied
to another grid, the layer raises a ValueError.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import with_axes


def filter_shape(grid) -> tuple[int, int]:
  """The half-spectrum shape `(h, w // 2 + 1)` of the filter for an `h x w` token grid."""
  h, w = grid
  return h, w // 2 + 1


class GlobalFilter(nn.Module):
  """GFNet's global filter `x <- F^-1[K (.) F[x]]` on a `[B, h, w, C]` grid, or on tokens `[B, h * w, C]` (row-major,
  as `PatchEmbed` makes them) with `grid=(h, w)`. The output has the input's shape and `dtype`.

  `complex_weight` `[h, w // 2 + 1, C, 2]` is created for the grid of the first call (`init`); other grids are
  an error (resize the weight with `resize_global_filter`).
  """
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, grid=None):
    if x.ndim == 3:
      if grid is None:
        raise ValueError(f"GlobalFilter: tokens {x.shape} need grid=(h, w)")
      if grid[0] * grid[1] != x.shape[1]:
        raise ValueError(f"GlobalFilter: grid={tuple(grid)} does not hold {x.shape[1]} tokens")
    shape = x.shape
    if x.ndim == 3:
      x = x.reshape(shape[0], grid[0], grid[1], shape[2])  # [B, h * w, C] -> [B, h, w, C]
    _, h, w, c = x.shape
    if self.has_variable("params", "complex_weight"):
      have = jnp.shape(nn.meta.unbox(self.get_variable("params", "complex_weight")))
      if tuple(have[:2]) != filter_shape((h, w)):
        raise ValueError(f"GlobalFilter: complex_weight {tuple(have)} is for a {have[0]}x{2 * (have[1] - 1)} "
                         f"(or {have[0]}x{2 * have[1] - 1}) token grid, got {h}x{w}; resize it with "
                         f"jaxvit.layers.global_filter.resize_global_filter (as GFNet's fine-tuning does) or "
                         f"build the model for this input size")
    weight = self.param("complex_weight", with_axes(jax.nn.initializers.normal(0.02), (None, None, "embed", None)),
                        filter_shape((h, w)) + (c, 2), self.param_dtype)
    weight = weight.astype(jnp.float32)
    spectrum = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")  # [B, h, w // 2 + 1, C] complex
    spectrum = spectrum * jax.lax.complex(weight[..., 0], weight[..., 1])
    y = jnp.fft.irfft2(spectrum, s=(h, w), axes=(1, 2), norm="ortho")  # [B, h, w, C] real
    return y.reshape(shape).astype(self.dtype)


def _bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
  """`[n_out, n_in]` bicubic interpolation with `align_corners=True` and edge clamping (PyTorch's
  `F.interpolate(mode="bicubic", align_corners=True)` along one axis, Keys' kernel with a = -0.75)."""
  m = np.zeros((n_out, n_in), np.float64)
  scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
  for i in range(n_out):
    src = i * scale
    base = int(np.floor(src))
    t = src - base
    for k, d in enumerate((-1, 0, 1, 2)):
      s = abs(t - d)
      wk = ((a + 2) * s - (a + 3)) * s * s + 1 if s <= 1 else ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
      m[i, min(max(base + d, 0), n_in - 1)] += wk
  return m


def resize_global_filter(weight, grid):
  """`complex_weight` `[h, w, C, 2]` resized to the filter of an `h' x w'` token `grid` (`[h', w' // 2 + 1, C, 2]`)
  by bicubic interpolation with aligned corners, as GFNet's `main_gfnet.py` does when fine-tuning at another
  resolution. The identity for the same shape."""
  h, w = filter_shape(grid)
  rows = jnp.asarray(_bicubic_matrix(weight.shape[0], h), jnp.float32)
  cols = jnp.asarray(_bicubic_matrix(weight.shape[1], w), jnp.float32)
  out = jnp.einsum("ih,jw,hwcz->ijcz", rows, cols, weight.astype(jnp.float32),
                   precision=jax.lax.Precision.HIGHEST)
  return out.astype(weight.dtype)
