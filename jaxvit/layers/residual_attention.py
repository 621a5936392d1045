"""Residual attention (ReViT, Diko et al. 2024, "ReViT: Enhancing Vision Transformers Feature Diversity with
Attention Residual Connections", arXiv:2402.11301, sec. 3, eq. 6): each layer's pre-softmax attention scores are
blended with the previous layer's blended scores, A_l = alpha QK^T / sqrt(d) + (1 - alpha) A_{l-1}, before the
softmax; the first layer has no residual."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.attention import merge_heads, qkv_heads


class ResidualAttention(nn.Module):
  """Multi-head self-attention (`qkv`, `proj`, as `jaxvit.layers.Attention`) that blends its scores with the
  `residual` `[B, H, N, N]` (float32) of the previous layer by `alpha`. Returns `(y, scores, aux)`: the blended
  pre-softmax `scores` are the next layer's residual; with `return_attention`, `aux["attn"]` holds the softmax."""
  num_heads: int
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  return_attention: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, residual=None, alpha=None, *, train: bool):
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q, k, v = qkv_heads(x, self.num_heads, self.qkv_bias, **kw)
    scale = jnp.asarray((dim // self.num_heads) ** -0.5, q.dtype)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q * scale, k).astype(jnp.float32)
    if residual is not None:
      alpha = jnp.asarray(alpha, jnp.float32)
      scores = alpha * scores + (1.0 - alpha) * residual
    attn = jax.nn.softmax(scores, axis=-1)
    aux = dict(attn=attn) if self.return_attention else {}
    attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train).astype(self.dtype)
    y = merge_heads(jnp.einsum("bhqk,bhkd->bhqd", attn, v), dim, **kw)
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not train), scores, aux
