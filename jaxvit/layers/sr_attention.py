"""Spatial-reduction attention (SRA, PVT: Wang et al. 2021, arXiv:2102.12122, sec. 3.3, eq. 3-4) and PVTv2's
linear SRA (arXiv:2106.13797, sec. 3.2); Twins' global sub-sampled attention (GSA, arXiv:2104.13840, sec. 3.2)
is the same layer. timm's `pvt_v2.py` (`Attention`) is the file followed.

Queries come from every token; keys and values from a reduced map: SR(x) = LN(Conv_{R x R, stride R}(x))
(R = `sr_ratio`), or in the linear variant GELU(LN(Conv_1x1(AdaptiveAvgPool_7(x)))), so the cost is
N x (H W / R^2) or N x 49 instead of N x N.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import Projection, dense, layer_norm
from jaxvit.layers.mlp import gelu
from jaxvit.layers.patch_embed import PatchEmbed


def attend(q, k, v, dropout: Optional[nn.Dropout] = None):
  """softmax(q k^T / sqrt(d)) v over head-major `[..., N, d]` queries and `[..., M, d]` keys / values.

  Logits and softmax in float32. Without `dropout` the normalisation is applied after the product (one pass
  fewer over the `[N, M]` weights); with it, `dropout(attn)` (a train-mode `nn.Dropout`) drops probabilities.
  """
  logits = jnp.einsum("...qd,...kd->...qk", q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype), k).astype(jnp.float32)
  if dropout is not None:
    attn = dropout(jax.nn.softmax(logits, axis=-1)).astype(v.dtype)
    return jnp.einsum("...qk,...kd->...qd", attn, v)
  # the max only guards exp against overflow (softmax does not depend on it): no gradient through it
  weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
  y = jnp.einsum("...qk,...kd->...qd", weights.astype(v.dtype), v)
  return y / weights.sum(axis=-1, keepdims=True).astype(v.dtype)


def _bins(n: int, out: int):
  """torch's adaptive pooling bins of `n` positions into `out`: [floor(i n / out), ceil((i + 1) n / out))."""
  return [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]


def adaptive_avg_pool(x, size: int):
  """torch's `AdaptiveAvgPool2d(size)` on `[B, H, W, C]` -> `[B, size, size, C]`. Divisible maps are a reshape
  + mean; otherwise the (possibly overlapping) bins are averaged one by one, rows then columns."""
  b, h, w, c = x.shape
  if h % size == 0 and w % size == 0:
    return x.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))
  x = jnp.stack([x[:, s:e].mean(axis=1) for s, e in _bins(h, size)], axis=1)  # [B, size, W, C]
  return jnp.stack([x[:, :, s:e].mean(axis=2) for s, e in _bins(w, size)], axis=2)


class SpatialReductionAttention(nn.Module):
  """Multi-head attention of a token map `[B, H, W, C]` to its spatially reduced copy; returns `[B, H, W, C]`.

  Submodules as timm's `Attention` in `pvt_v2.py` (and Twins' `GlobalSubSampleAttn`, PVT's `Attention`): `q`,
  `kv` (kernel `[C, 2, heads, head_dim]`), `sr` (the reduction: a stride-`sr_ratio` non-overlapping conv,
  computed as `PatchEmbed`'s reshape + matmul, or with `linear` a 1x1 conv after pooling to `pool_size`), `norm`
  (torch's LayerNorm, eps 1e-5) and `proj`. `sr_ratio=1` without `linear` is plain multi-head attention. Like
  torch's strided conv, the reduction drops the last rows / columns that do not fill a whole `sr_ratio` cell.
  """
  num_heads: int
  sr_ratio: int = 1
  linear: bool = False  # PVTv2-li: adaptive average pool to `pool_size` + 1x1 conv + LN + GELU
  pool_size: int = 7
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  norm_eps: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, h, w, dim = x.shape
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q = Projection((self.num_heads, head_dim), ("embed", "heads", "kv"), use_bias=self.qkv_bias, name="q", **kw)(
        x.reshape(b, h * w, dim)).transpose(0, 2, 1, 3)  # [B, heads, N, d]

    if self.linear:
      kv_in = dense(dim, ("conv_in", "embed"), name="sr", **kw)(adaptive_avg_pool(x, self.pool_size))
      kv_in = gelu(layer_norm(self.norm_eps, name="norm", **kw)(kv_in.reshape(b, -1, dim)))
    elif self.sr_ratio > 1:
      r = self.sr_ratio
      if h < r or w < r:
        raise ValueError(f"SpatialReductionAttention: a {h}x{w} token map is smaller than sr_ratio={r}; "
                         f"accepted: maps of at least {r}x{r} (a larger input)")
      kv_in = PatchEmbed(dim, r, name="sr", **kw)(x[:, :h // r * r, :w // r * r])  # [B, (H / R) (W / R), C]
      kv_in = layer_norm(self.norm_eps, name="norm", **kw)(kv_in)
    else:
      kv_in = x.reshape(b, h * w, dim)
    kv = Projection((2, self.num_heads, head_dim), ("embed", None, "heads", "kv"), use_bias=self.qkv_bias,
                    name="kv", **kw)(kv_in)  # [B, M, 2, heads, d]
    k, v = (t[0] for t in jax.lax.split(kv.transpose(2, 0, 3, 1, 4), (1, 1), axis=0))  # 2 x [B, heads, M, d]

    dropout = nn.Dropout(self.attn_drop_rate, deterministic=False) if train and self.attn_drop_rate > 0 else None
    y = attend(q, k, v, dropout)  # [B, heads, N, d]
    y = Projection((dim,), ("heads", "kv", "embed"), axis=(1, 3), name="proj", **kw)(y)  # [B, N, C]
    y = nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)
    return y.reshape(b, h, w, dim)
