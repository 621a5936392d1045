"""Bi-level routing attention (BRA, BiFormer: Zhu et al. 2023, arXiv:2303.08810, sec. 3.2, eq. 1-4) with its local
context enhancement (LCE, a depthwise conv on V); the official `ops/bra_legacy.py` (`BiLevelRoutingAttention`,
`kv_downsample_mode='identity'`, as `models/biformer.py` instantiates it) is the file followed.

The map is cut into `n_win x n_win` regions. Region-level routing: the region-averaged queries and keys give an
affinity `A^r = Q^r (K^r)^T` (eq. 2) and each region keeps the indices of its `topk` most related regions (eq. 3,
no gradient through the routing, as the official default). Token-to-token attention: each region's queries attend
to the keys / values gathered from those `topk` regions (eq. 4). `topk` is a config constant, so `lax.top_k` and
`take_along_axis` keep every shape static. The LCE output (`lepe`, 5x5 depthwise conv of V) is added before the
output projection `wo`. As the official code, both softmaxes use the scale `qk_dim ** -0.5`, not the head width's.
`GlobalAttentionLePE` is the official `AttentionLePE` BiFormer runs in its last stage (one region).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.attention import qkv_heads
from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.init import dense
from jaxvit.layers.sr_attention import attend


def to_regions(x, n: int):
  """`[B, H, W, C] -> [B, n * n, (H / n) (W / n), C]` (regions row-major, tokens row-major inside each)."""
  b, h, w, c = x.shape
  x = x.reshape(b, n, h // n, n, w // n, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, n * n, (h // n) * (w // n), c)


def from_regions(x, n: int, h: int, w: int):
  """Inverse of `to_regions`: `[B, n * n, (H / n) (W / n), C] -> [B, H, W, C]`."""
  b, c = x.shape[0], x.shape[-1]
  x = x.reshape(b, n, n, h // n, w // n, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def route(q_region, k_region, topk: int, scale: float):
  """Indices `[B, P, topk]` of the `topk` regions with the largest affinity (eq. 2-3) to each region's query."""
  affinity = jnp.einsum("bpc,bqc->bpq", q_region * jnp.asarray(scale, q_region.dtype), k_region)
  return jax.lax.top_k(affinity.astype(jnp.float32), topk)[1]


def gather_regions(x, index):
  """`x` `[B, P, T, C]` per region and `index` `[B, P, k]` -> `[B, P, k T, C]`: the tokens of the k routed regions
  of each region, concatenated (the official `KVGather`)."""
  b, p, t, c = x.shape
  picked = jnp.take_along_axis(x[:, None], index[:, :, :, None, None], axis=2)  # [B, P, k, T, C]
  return picked.reshape(b, p, -1, c)


class BiLevelRoutingAttention(nn.Module):
  """BRA of a token map `[B, H, W, C]` (H and W divisible by `n_win`) -> `[B, H, W, C]`.

  Submodules as the official: `qkv` (one linear to `qk_dim + qk_dim + C`, the official `qkv.qkv`), `lepe` (LCE,
  `side_dwconv` x `side_dwconv` depthwise conv on V), `wo` (output linear).
  """
  num_heads: int
  n_win: int = 7
  topk: int = 4
  qk_dim: int = 0  # 0: the input width
  side_dwconv: int = 5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, dim = x.shape
    n, qk_dim, heads = self.n_win, self.qk_dim or dim, self.num_heads
    if h % n or w % n:
      raise ValueError(f"BiLevelRoutingAttention: a {h}x{w} token map does not split into n_win={n} regions per "
                       f"side; accepted: maps whose sides are multiples of {n}")
    if not 0 < self.topk <= n * n:
      raise ValueError(f"BiLevelRoutingAttention: topk={self.topk}; accepted: 1 ... n_win ** 2 = {n * n}")
    if qk_dim % heads or dim % heads:
      raise ValueError(f"BiLevelRoutingAttention: qk_dim={qk_dim} and dim={dim} must be divisible by "
                       f"num_heads={heads}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    qkv = dense(2 * qk_dim + dim, ("embed", "heads"), name="qkv", **kw)(to_regions(x, n))  # [B, P, T, 2 qk + C]
    q, k, v = jnp.split(qkv, (qk_dim, 2 * qk_dim), axis=-1)
    scale = qk_dim ** -0.5
    index = route(*(jax.lax.stop_gradient(t.mean(axis=2)) for t in (q, k)), self.topk, scale)
    lepe = DepthwiseConv(self.side_dwconv, name="lepe", **kw)(from_regions(v, n, h, w))

    def heads_of(t):  # [B, P, T, c] -> [B, P, heads, T, c / heads]
      return t.reshape(*t.shape[:3], heads, -1).transpose(0, 1, 3, 2, 4)

    q, k, v = heads_of(q), heads_of(gather_regions(k, index)), heads_of(gather_regions(v, index))
    # attend scales by the head width: rescale q to the official qk_dim ** -0.5
    y = attend(q * jnp.asarray(scale * (qk_dim // heads) ** 0.5, q.dtype), k, v)  # [B, P, heads, T, d_v]
    y = y.transpose(0, 1, 3, 2, 4).reshape(b, n * n, -1, dim)
    y = from_regions(y, n, h, w) + lepe
    return dense(dim, ("heads", "embed"), name="wo", **kw)(y)


class GlobalAttentionLePE(nn.Module):
  """Multi-head attention over all tokens of `[B, H, W, C]` plus LePE-style `lepe` (depthwise conv of the input,
  added before `proj`); the official `AttentionLePE` (`qkv` without bias, 8 heads). `side_dwconv=0`: no `lepe`
  (the official `Attention`)."""
  num_heads: int = 8
  side_dwconv: int = 5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, dim = x.shape
    if dim % self.num_heads:
      raise ValueError(f"GlobalAttentionLePE: dim={dim} is not divisible by num_heads={self.num_heads}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = attend(*qkv_heads(x.reshape(b, h * w, dim), self.num_heads, qkv_bias=False, **kw))  # [B, heads, N, d]
    y = y.transpose(0, 2, 1, 3).reshape(b, h, w, dim)
    if self.side_dwconv:
      y = y + DepthwiseConv(self.side_dwconv, name="lepe", **kw)(x)
    return dense(dim, ("embed", "embed"), name="proj", **kw)(y)
