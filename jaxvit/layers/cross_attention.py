"""CrossViT's cross-attention fusion (Chen et al. 2021, arXiv:2103.14899, Sec. 3.3).

One branch's class token is projected to the other branch's width (f), queries that branch's tokens by
multi-head cross-attention (one query, so linear in the number of tokens), and is projected back (g):

  x' = [f(x_cls) || x'_patch],   CA(x') = softmax(x'_cls W_q (x' W_k)^T / sqrt(C / h)) x' W_v,
  y_cls = f(x_cls) + MCA(LN(x')),   new class token = g(y_cls).

f and g are LayerNorm -> GELU -> Linear (timm's `projs` / `revert_projs`); MCA is multi-head CA. timm's `crossvit.py` is the file
followed; names are its names (`wq`, `wk`, `wv`, `proj`, `norm1`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import Projection, dense, layer_norm
from jaxvit.layers.mlp import gelu


class CrossAttention(nn.Module):
  """Multi-head attention of the first token (the query) over all tokens; timm's `CrossAttention`.

  `[B, N, C] -> [B, 1, C]`. Separate `wq`, `wk`, `wv` projections (kernels `[embed, heads, kv]`), `proj` back.
  """
  num_heads: int
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, return_attention: bool = False):
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def heads(name, tokens):  # [B, N, C] -> [B, N, H, d]
      return Projection((self.num_heads, head_dim), ("embed", "heads", "kv"), use_bias=self.qkv_bias, name=name,
                        **kw)(tokens)
    q = heads("wq", x[:, 0]) * jnp.asarray(head_dim ** -0.5, self.dtype)  # [B, H, d]
    k, v = heads("wk", x), heads("wv", x)
    logits = jnp.einsum("bhd,bnhd->bhn", q, k).astype(jnp.float32)  # [B, H, N]
    attn = jax.nn.softmax(logits, axis=-1)
    attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train).astype(self.dtype)
    y = jnp.einsum("bhn,bnhd->bhd", attn, v)
    y = Projection((dim,), ("heads", "kv", "embed"), axis=(1, 2), name="proj", **kw)(y)[:, None]  # [B, 1, C]
    y = nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)
    return (y, attn) if return_attention else y


class CrossAttentionBlock(nn.Module):
  """`x_cls + DropPath(MCA(LN(x)))`: only the class token leaves, `[B, N, C] -> [B, 1, C]`; timm's
  `CrossAttentionBlock` (no MLP)."""
  num_heads: int
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  norm_eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = layer_norm(self.norm_eps, name="norm1", **kw)(x)
    y = CrossAttention(self.num_heads, self.qkv_bias, self.attn_drop_rate, self.proj_drop_rate, name="attn",
                       **kw)(y, train=train)
    return x[:, :1] + drop_path(self, y, self.drop_path_rate, train=train)


class CrossAttentionFusion(nn.Module):
  """A class token attends to another branch's patch tokens: `(cls [B, 1, C], patches [B, N, C']) -> [B, 1, C]`.

  `proj_in` (f: C -> C'), `depth` cross-attention blocks `blocks_{j}` at width C' with `num_heads`, `proj_out`
  (g: C' -> C); `norm_in` / `norm_out` are f's and g's LayerNorms. The kernels of f and g name only their input
  axis (`embed`; the output is the other branch's width). Blocks after the first see only the class token (as
  timm's; its released models all have one block).
  """
  num_heads: int
  depth: int = 1
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  norm_eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, cls, patches, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim, other_dim = cls.shape[-1], patches.shape[-1]
    x = gelu(layer_norm(self.norm_eps, name="norm_in", **kw)(cls))
    x = dense(other_dim, ("embed", None), name="proj_in", **kw)(x)  # f: [B, 1, C] -> [B, 1, C']
    x = jnp.concatenate([x, patches.astype(x.dtype)], axis=1)
    for j in range(self.depth):
      x = CrossAttentionBlock(self.num_heads, self.qkv_bias, self.attn_drop_rate, self.proj_drop_rate,
                              self.drop_path_rate, self.norm_eps, name=f"blocks_{j}", **kw)(x, train=train)
    x = gelu(layer_norm(self.norm_eps, name="norm_out", **kw)(x))
    return dense(dim, ("embed", None), name="proj_out", **kw)(x)  # g: [B, 1, C'] -> [B, 1, C]
