"""(Shifted) window multi-head self-attention with a relative position bias (Swin Transformer, Liu et al. 2021,
arXiv:2103.14030, sec. 3.2 and eq. 4: softmax(QK^T / sqrt(d) + B) V).

Tokens of an `[B, H, W, C]` map attend only inside non-overlapping `M x M` windows (W-MSA); with a shift
(SW-MSA), the map is first rolled by `-shift` (the paper's "cyclic shift"), and a mask keeps tokens from
attending across the seams of the wrapped-around regions. timm's `swin_transformer.py` is the file followed.
The mask, the relative position index and the window layout are numpy constants built at trace time.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import Projection, trunc_normal_02, with_axes

MASK_VALUE = -100.0  # added to the logits of blocked pairs, as the reference implementation does (not -inf)


def _pair(size: Union[int, Sequence[int]]) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def window_partition(x, window_size):
  """`[B, H, W, C] -> [B, nW, wh * ww, C]`: non-overlapping windows in row-major order, each window's tokens
  row-major (the paper's window partition; H, W multiples of the window)."""
  b, h, w, c = x.shape
  wh, ww = _pair(window_size)
  x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // wh) * (w // ww), wh * ww, c)


def window_reverse(windows, window_size, height: int, width: int):
  """`[B, nW, wh * ww, C] -> [B, H, W, C]`, the inverse of `window_partition`."""
  b, _, _, c = windows.shape
  wh, ww = _pair(window_size)
  x = windows.reshape(b, height // wh, width // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, height, width, c)


def relative_position_index(window_size) -> np.ndarray:
  """`[N, N]` (N = wh * ww) row of the bias table each (query, key) pair reads: the pair's offset
  (dy, dx) in [-(wh-1), wh-1] x [-(ww-1), ww-1], flattened as (dy + wh - 1) * (2 ww - 1) + dx + ww - 1."""
  wh, ww = _pair(window_size)
  coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)  # [2, N]
  rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N]: query minus key
  return (rel[0] + wh - 1) * (2 * ww - 1) + rel[1] + ww - 1


def shifted_window_mask(grid, window_size, shift_size) -> np.ndarray:
  """`[nW, N, N]` additive mask for SW-MSA on a `grid` (H, W) map rolled by `-shift`: 0 where query and key
  came from the same region of the unrolled map, `MASK_VALUE` where the roll made them neighbours.

  Along each axis the rolled map has three regions: [0, H - M), [H - M, H - s) and [H - s, H); a token's
  region id combines its row and column regions.
  """
  (h, w), (wh, ww), (sh, sw) = _pair(grid), _pair(window_size), _pair(shift_size)
  region = lambda n, m, s: np.searchsorted(np.array([n - m, n - s]), np.arange(n), side="right")
  ids = (3 * region(h, wh, sh)[:, None] + region(w, ww, sw)[None, :]).astype(np.float32)  # [H, W]
  ids = window_partition(ids[None, :, :, None], (wh, ww))[0, :, :, 0]  # [nW, N]
  return np.where(ids[:, :, None] == ids[:, None, :], 0.0, MASK_VALUE).astype(np.float32)


class WindowAttention(nn.Module):
  """W-MSA / SW-MSA on a feature map `[B, H, W, C] -> [B, H, W, C]`; timm's `WindowAttention` (`qkv`, `proj`,
  `relative_position_bias_table`) plus the block's cyclic shift, partition and reverse.

  `window_size` divides H and W; `shift_size` > 0 rolls the map by `-shift_size` first (and back after), with
  `shifted_window_mask` blocking the pairs that were not neighbours. The bias B of eq. 4 is read from a learned
  `[(2 wh - 1) (2 ww - 1), heads]` table by `relative_position_index`.
  """
  num_heads: int
  window_size: Union[int, Sequence[int]] = 7
  shift_size: Union[int, Sequence[int]] = 0
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, h, w, dim = x.shape
    (wh, ww), shift = _pair(self.window_size), _pair(self.shift_size)
    if h % wh or w % ww:
      raise ValueError(f"feature map {h}x{w} is not divisible by window_size={(wh, ww)}")
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    head_dim, n = dim // self.num_heads, wh * ww
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if any(shift):
      x = jnp.roll(x, (-shift[0], -shift[1]), axis=(1, 2))
    windows = window_partition(x, (wh, ww))  # [B, nW, N, C]
    qkv = Projection((3, self.num_heads, head_dim), ("embed", None, "heads", "kv"), use_bias=self.qkv_bias,
                     name="qkv", **kw)(windows)  # [B, nW, N, 3, heads, d]
    q, k, v = (t[0] for t in jax.lax.split(qkv.transpose(3, 0, 1, 4, 2, 5), (1, 1, 1), axis=0))  # [B, nW, h, N, d]

    table = self.param("relative_position_bias_table", with_axes(trunc_normal_02, (None, "heads")),
                       ((2 * wh - 1) * (2 * ww - 1), self.num_heads), self.param_dtype)
    bias = jnp.take(table, relative_position_index((wh, ww)).reshape(-1), axis=0)  # [N * N, heads]
    bias = bias.reshape(n, n, self.num_heads).transpose(2, 0, 1).astype(jnp.float32)  # [heads, N, N]
    if any(shift):
      bias = bias + jnp.asarray(shifted_window_mask((h, w), (wh, ww), shift))[:, None]  # [nW, heads, N, N]

    logits = jnp.einsum("bwhqd,bwhkd->bwhqk", q * jnp.asarray(head_dim ** -0.5, q.dtype), k).astype(jnp.float32)
    logits = logits + bias
    if train and self.attn_drop_rate > 0:
      attn = nn.Dropout(self.attn_drop_rate)(jax.nn.softmax(logits, axis=-1), deterministic=False)
      y = jnp.einsum("bwhqk,bwhkd->bwhqd", attn.astype(self.dtype), v)
    else:  # normalised after the product (one fewer pass over [N, N]); the max only guards exp
      weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
      y = jnp.einsum("bwhqk,bwhkd->bwhqd", weights.astype(self.dtype), v)
      y = y / weights.sum(axis=-1, keepdims=True).astype(self.dtype)
    y = Projection((dim,), ("heads", "kv", "embed"), axis=(2, 4), name="proj", **kw)(y)  # [B, nW, N, C]
    y = nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)
    y = window_reverse(y, (wh, ww), h, w)
    return jnp.roll(y, shift, axis=(1, 2)) if any(shift) else y
