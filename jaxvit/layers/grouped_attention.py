"""Locally-grouped self-attention (LSA, Twins-SVT: Chu et al. 2021, arXiv:2104.13840, sec. 3.2, eq. 1):
multi-head attention inside non-overlapping `ws x ws` windows of a token map. timm's `twins.py`
(`LocallyGroupedAttn`) is the file followed; its global companion (GSA) is `layers.sr_attention`."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import Projection
from jaxvit.layers.partition import window_partition, window_reverse
from jaxvit.layers.sr_attention import attend


class LocallyGroupedAttention(nn.Module):
  """LSA on `[B, H, W, C]` -> `[B, H, W, C]`; submodules `qkv` (kernel `[C, 3, heads, head_dim]`) and `proj`.

  A map that is not a multiple of `window_size` is zero-padded at the bottom / right after the block's norm,
  and, as in timm's (and the official) `forward_padding`, the padded tokens are attended to unmasked; the
  padding is cropped before `proj`.
  """
  num_heads: int
  window_size: int = 7
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, h, w, dim = x.shape
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    ws, head_dim = self.window_size, dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    windows = window_partition(x, ws)  # [B * n, ws * ws, C]
    qkv = Projection((3, self.num_heads, head_dim), ("embed", None, "heads", "kv"), name="qkv", **kw)(windows)
    q, k, v = (t[0] for t in jax.lax.split(qkv.transpose(2, 0, 3, 1, 4), (1, 1, 1), axis=0))  # [B * n, heads, ws^2, d]
    dropout = nn.Dropout(self.attn_drop_rate, deterministic=False) if train and self.attn_drop_rate > 0 else None
    y = attend(q, k, v, dropout).transpose(0, 2, 1, 3).reshape(-1, ws * ws, dim)  # [B * n, ws^2, C]
    y = window_reverse(y, ws, (hp, wp))[:, :h, :w].reshape(b, h, w, self.num_heads, head_dim)
    y = Projection((dim,), ("heads", "kv", "embed"), axis=(-2, -1), name="proj", **kw)(y)  # [B, H, W, C]
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)
