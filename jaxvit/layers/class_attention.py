"""Class attention (CaiT, Touvron et al. 2021, arXiv:2103.17239, sec. 3.2, eq. 5-6) as VOLO uses it
(arXiv:2106.13112, sec. 3: two class-attention blocks after the token stages); timm's `volo.py` is the
file followed.

Only the class token queries: q = W_q x_cls, k / v = W_kv [x_cls, x_patches], and only the class token is
updated; the patch tokens pass through unchanged.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import Projection, layer_norm
from jaxvit.layers.mlp import Mlp


class ClassAttention(nn.Module):
  """`[B, N, C] -> [B, 1, C]`: the class token (token 0) attends to all tokens; timm's `ClassAttention`
  (`kv` fused with kernel `[embed, 2, heads, head_dim]`, `q`, `proj`)."""
  num_heads: int
  qkv_bias: bool = False
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    kv = Projection((2, self.num_heads, head_dim), ("embed", None, "heads", "kv"), use_bias=self.qkv_bias,
                    name="kv", **kw)(x)  # [B, N, 2, H, d]
    k, v = kv[:, :, 0], kv[:, :, 1]
    q = Projection((self.num_heads, head_dim), ("embed", "heads", "kv"), use_bias=self.qkv_bias, name="q",
                   **kw)(x[:, :1])  # [B, 1, H, d]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * jnp.asarray(head_dim ** -0.5, q.dtype), k)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train)
    y = jnp.einsum("bhqk,bkhd->bqhd", attn, v)  # [B, 1, H, d]
    y = Projection((dim,), ("heads", "kv", "embed"), axis=(-2, -1), name="proj", **kw)(y)
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)


class ClassBlock(nn.Module):
  """x_cls + DropPath(CA(LN(x))), then x_cls + DropPath(MLP(LN(x_cls))); the patch tokens are returned
  unchanged behind it. timm's `ClassBlock` (`norm1`, `attn`, `norm2`, `mlp`)."""
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = False
  drop_rate: float = 0.0  # after the attention's and the MLP's projections
  attn_drop_rate: float = 0.0
  norm_eps: float = 1e-5  # torch's nn.LayerNorm default, which VOLO uses
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float = 0.0):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    cls = x[:, :1]
    y = ClassAttention(self.num_heads, self.qkv_bias, self.attn_drop_rate, self.drop_rate, name="attn", **kw)(
        layer_norm(self.norm_eps, name="norm1", **kw)(x), train=self.train)
    cls = cls + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.drop_rate, name="mlp", **kw)(
        layer_norm(self.norm_eps, name="norm2", **kw)(cls), train=self.train)
    cls = cls + drop_path(self, y, drop_path_rate, train=self.train)
    return jnp.concatenate([cls, x[:, 1:].astype(cls.dtype)], axis=1)
