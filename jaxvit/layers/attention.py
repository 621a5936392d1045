"""Multi-head self-attention (Vaswani et al. 2017, arXiv:1706.03762, eq. 1: softmax(QK^T / sqrt(d)) V)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import trunc_normal_02, with_axes, zeros


class Attention(nn.Module):
  """Multi-head self-attention over a token sequence, timm's `Attention` (`qkv`, `proj`).

  `qkv` is one fused projection with kernel `[embed, 3, heads, head_dim]` (the layout timm's
  `[3 * embed]` output reshapes to), so one matmul computes q, k and v and tensor parallelism can
  shard `heads`. With `return_attention`, `aux` holds the attention maps `attn` `[B, H, N, N]` and
  the head-averaged keys `keys` `[B, N, head_dim]` (what ToMe matches tokens on).
  """
  num_heads: int
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  return_attention: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    qkv = nn.DenseGeneral(
        (3, self.num_heads, head_dim), use_bias=self.qkv_bias, name="qkv",
        kernel_init=with_axes(trunc_normal_02, ("embed", None, "heads", "kv")),
        bias_init=with_axes(zeros, (None, "heads", "kv")), **kw)(x)  # [B, N, 3, H, d]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, H, d]

    logits = jnp.einsum("bqhd,bkhd->bhqk", q * (head_dim ** -0.5), k)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    aux = dict(attn=attn, keys=k.mean(axis=2)) if self.return_attention else {}
    attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train)
    y = jnp.einsum("bhqk,bkhd->bqhd", attn, v)  # [B, N, H, d]

    y = nn.DenseGeneral(
        dim, axis=(-2, -1), name="proj",
        kernel_init=with_axes(trunc_normal_02, ("heads", "kv", "embed")),
        bias_init=with_axes(zeros, ("embed",)), **kw)(y)
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not train), aux
