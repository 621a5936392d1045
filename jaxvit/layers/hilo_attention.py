"""HiLo attention (LITv2: Pan et al. 2022, "Fast Vision Transformers with HiLo Attention", arXiv:2205.13213,
sec. 4.1, Fig. 3); the official ziplab/LITv2 `classification/models/attentions.py` (`HiLo`) is the file followed.

The heads are split by `alpha`: `int(alpha * heads)` Lo-Fi heads attend from every token to the map average-pooled
by `window_size` (s x s cells: low frequencies, global), the others are Hi-Fi heads attending inside
non-overlapping s x s windows (high frequencies, local). Each branch has its own projections (`h_qkv`, `h_proj`;
`l_q`, `l_kv`, `l_proj`) and their outputs are concatenated along channels, Hi-Fi first. `window_size=1` is plain
multi-head attention in the Lo-Fi branch (no pooling, all heads).
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.init import dense
from jaxvit.layers.partition import window_partition, window_reverse
from jaxvit.layers.sr_attention import attend


def split_heads(x, parts: int, heads: int):
  """`[..., N, parts * heads * d] -> parts x [..., heads, N, d]` (torch's `reshape(..., parts, heads, d)`)."""
  x = x.reshape(*x.shape[:-1], parts, heads, -1)
  x = jnp.moveaxis(x, (-3, -2), (0, -3))  # [parts, ..., heads, N, d]
  return tuple(x[i] for i in range(parts))


def merge(y):
  """`[..., heads, N, d] -> [..., N, heads * d]`."""
  y = jnp.swapaxes(y, -3, -2)
  return y.reshape(*y.shape[:-2], -1)


class HiLo(nn.Module):
  """HiLo attention of a token map `[B, H, W, C]` (H, W multiples of `window_size`) -> `[B, H, W, C]`."""
  num_heads: int
  window_size: int = 2
  alpha: float = 0.5
  qkv_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def head_split(self) -> tuple[int, int]:
    """(Hi-Fi heads, Lo-Fi heads)."""
    if self.window_size == 1:
      return 0, self.num_heads
    low = int(self.num_heads * self.alpha)
    return self.num_heads - low, low

  @nn.compact
  def __call__(self, x):
    b, h, w, dim = x.shape
    ws = self.window_size
    if dim % self.num_heads:
      raise ValueError(f"HiLo: dim={dim} is not divisible by num_heads={self.num_heads}")
    if h % ws or w % ws:
      raise ValueError(f"HiLo: a {h}x{w} token map is not divisible by window_size={ws}; accepted: maps whose "
                       f"sides are multiples of {ws}")
    head_dim = dim // self.num_heads
    hi_heads, lo_heads = self.head_split()
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    outs = []
    if hi_heads:  # Hi-Fi: attention inside each ws x ws window
      windows = window_partition(x, ws)  # [B n, ws^2, C]
      q, k, v = split_heads(dense(3 * hi_heads * head_dim, ("embed", "heads"), use_bias=self.qkv_bias, name="h_qkv",
                                  **kw)(windows), 3, hi_heads)
      y = window_reverse(merge(attend(q, k, v)), ws, (h, w))
      outs.append(dense(hi_heads * head_dim, ("heads", "embed"), name="h_proj", **kw)(y))
    if lo_heads:  # Lo-Fi: every token attends to the ws x ws average-pooled map
      l_dim = lo_heads * head_dim
      (q,) = split_heads(dense(l_dim, ("embed", "heads"), use_bias=self.qkv_bias, name="l_q", **kw)(
          x.reshape(b, h * w, dim)), 1, lo_heads)
      pooled = x if ws == 1 else x.reshape(b, h // ws, ws, w // ws, ws, dim).mean(axis=(2, 4))
      k, v = split_heads(dense(2 * l_dim, ("embed", "heads"), use_bias=self.qkv_bias, name="l_kv", **kw)(
          pooled.reshape(b, -1, dim)), 2, lo_heads)
      y = merge(attend(q, k, v)).reshape(b, h, w, l_dim)
      outs.append(dense(l_dim, ("heads", "embed"), name="l_proj", **kw)(y))
    return jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
