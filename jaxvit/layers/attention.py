"""Multi-head self-attention (Vaswani et al. 2017, arXiv:1706.03762, eq. 1: softmax(QK^T / sqrt(d)) V)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import Projection
from jaxvit.layers.rope import apply_rope


class Attention(nn.Module):
  """Multi-head self-attention over a token sequence, timm's `Attention` (`qkv`, `proj`).

  `qkv` is one fused projection with kernel `[embed, 3, heads, head_dim]` (the layout timm's
  `[3 * embed]` output reshapes to), so one matmul computes q, k and v and tensor parallelism can
  shard `heads`. With `return_attention`, `aux` holds the attention maps `attn` `[B, H, N, N]`, the
  head-averaged keys `keys` `[B, N, head_dim]` (what ToMe matches tokens on) and the values
  `values` `[B, H, N, head_dim]` (TinyMIM's V-V relation); with `return_keys`, only `keys`; with
  `return_cls_attn`, `cls_attn` `[B, N - 1]`: the class token's head-averaged attention to the others
  (EViT's token scores). `bias`
  `[B, N]` is added to every query's logits per key (ToMe's proportional attention, log token size); a 4D `bias`
  `[B or 1, H or 1, N, N]` to each (query, key) logit (FIRE, `jaxvit.layers.fire`).
  `policy` `[B, N]` (0 / 1) masks keys as DynamicViT's `softmax_with_policy` does: a dropped token
  still attends to itself, and eps = 1e-6 keeps the rows finite. `rope` `(sin, cos)` rotates the queries
  and keys of the last tokens (the patches) before the product (RoPE, `jaxvit.layers.rope`); a callable `rope`
  turns them itself (LRPE, `jaxvit.layers.lrpe`). `head_mask` `[B, H]` (0 / 1, or straight-through) scales each
  head's queries, keys, values and output, as AdaViT's width selection of the qkv and proj weights does
  (`jaxvit.dynamic.adavit`).
  """
  num_heads: int
  qkv_bias: bool = True
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  return_attention: bool = False
  return_keys: bool = False
  return_cls_attn: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, bias=None, policy=None, rope=None, head_mask=None):
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"embed dim {dim} is not divisible by num_heads={self.num_heads}")
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q, k, v = qkv_heads(x, self.num_heads, self.qkv_bias, **kw)
    if head_mask is not None:  # [B, H]: AdaViT zeroes a dropped head's queries, keys, values and output
      mask = head_mask[:, :, None, None].astype(q.dtype)
      q, k, v = q * mask, k * mask, v * mask
    if rope is not None:  # RoPE's (sin, cos), or a function turning q and k alike (LRPE)
      q, k = (rope(q), rope(k)) if callable(rope) else (apply_rope(q, *rope), apply_rope(k, *rope))

    logits = jnp.einsum("bhqd,bhkd->bhqk", q * jnp.asarray(head_dim ** -0.5, q.dtype), k).astype(jnp.float32)
    if bias is not None:  # [B, N] per key, or [B or 1, H or 1, N, N] per query and key
      logits = logits + (bias[:, None, None, :] if bias.ndim == 2 else bias).astype(jnp.float32)
    aux = dict(keys=k.mean(axis=1)) if self.return_keys else {}
    if self.return_cls_attn:
      aux["cls_attn"] = jax.nn.softmax(logits[:, :, 0], axis=-1).mean(axis=1)[:, 1:]
    if policy is not None:
      attn = _softmax_with_policy(logits, policy)
      attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train).astype(self.dtype)
      y = jnp.einsum("bhqk,bhkd->bhqd", attn, v)
    elif self.return_attention or (train and self.attn_drop_rate > 0):
      attn = jax.nn.softmax(logits, axis=-1)
      if self.return_attention:
        aux = dict(attn=attn, keys=k.mean(axis=1), values=v)
      attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train).astype(self.dtype)
      y = jnp.einsum("bhqk,bhkd->bhqd", attn, v)
    else:
      # softmax(S) V with the normalisation applied after the product: one fewer pass over [N, N]. The
      # max only guards exp against overflow (softmax does not depend on it), so no gradient flows through it.
      weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
      y = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(self.dtype), v)
      y = y / weights.sum(axis=-1, keepdims=True).astype(self.dtype)

    y = merge_heads(y if head_mask is None else y * mask, dim, **kw)
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not train), aux


def qkv_heads(x, num_heads: int, qkv_bias: bool = True, **kw):
  """3 x `[B, H, N, d]` from timm's fused `qkv` projection (kernel `[embed, 3, heads, head_dim]`), created in the
  calling module. Head-major, the layout CPU dots run fastest; `lax.split`'s gradient is one concatenate
  (indexing would pad each of dq, dk, dv to the full shape and add them)."""
  head_dim = x.shape[-1] // num_heads
  qkv = Projection((3, num_heads, head_dim), ("embed", None, "heads", "kv"), use_bias=qkv_bias, name="qkv",
                   **kw)(x)  # [B, N, 3, H, d]
  return tuple(t[0] for t in jax.lax.split(qkv.transpose(2, 0, 3, 1, 4), (1, 1, 1), axis=0))


def merge_heads(y, dim: int, **kw):
  """`[B, H, N, d] -> [B, N, dim]` through timm's head-merging `proj` (kernel `[heads, head_dim, embed]`)."""
  return Projection((dim,), ("heads", "kv", "embed"), axis=(1, 3), name="proj", **kw)(y)


def _softmax_with_policy(logits, policy, eps: float = 1e-6):
  """softmax over the kept keys (`policy` `[B, N]`), each query also keeping itself; (e + eps / N) / (sum + eps)."""
  n = logits.shape[-1]
  keep = policy[:, None, None, :].astype(jnp.float32)
  keep = keep + (1.0 - keep) * jnp.eye(n, dtype=jnp.float32)
  weights = jnp.exp(logits - logits.max(axis=-1, keepdims=True)) * keep  # the official max is not detached
  return (weights + eps / n) / (weights.sum(axis=-1, keepdims=True) + eps)
