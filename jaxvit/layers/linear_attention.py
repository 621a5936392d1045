"""Attention in time linear in the token count N, for the ViT's `mixer=` (jaxvit.layers.token_mixer).

- Performer's FAVOR+ (Choromanski et al. 2021, arXiv:2009.14794, sec. 2.3-2.4, Lemma 1): softmax(q k^T) v is
  approximated by phi(q) (phi(k)^T v) / (phi(q) sum_t phi(k_t)), with positive random features
  phi(x) = exp(w x - |x|^2 / 2) / sqrt(m) for m orthogonal random directions w (`positive_features`,
  `favor_attention`; T2T-ViT's token Performer uses the same two functions).
- Linformer (Wang et al. 2020, arXiv:2006.04768, sec. 4, eq. 7): keys and values are projected along the token
  axis to a fixed length k by learned `E`, `F` `[k, N]` (shared by the heads, the paper's headwise sharing), so
  softmax(q (E K)^T / sqrt(d)) (F V) costs N x k.
Both keep timm's `qkv` / `proj` parameter layout (`jaxvit.layers.attention.Attention`), so a pretrained DeiT's
weights load into them.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.attention import merge_heads, qkv_heads
from jaxvit.layers.init import with_axes


def positive_features(x, w, stabilize: bool = False):
  """Performer's positive random features `[..., T, d] -> [..., T, m]`: exp(w x - |x|^2 / 2) / sqrt(m), in
  float32. `stabilize` subtracts the maximum exponent over the last two axes first: a constant per sequence,
  which cancels between FAVOR+'s numerator and denominator (as performer-pytorch's stabiliser)."""
  x = x.astype(jnp.float32)
  exponent = jnp.einsum("...td,md->...tm", x, w.astype(jnp.float32)) - 0.5 * jnp.sum(x * x, -1, keepdims=True)
  if stabilize:
    exponent = exponent - jax.lax.stop_gradient(exponent.max(axis=(-2, -1), keepdims=True))
  return jnp.exp(exponent) / math.sqrt(w.shape[0])


def favor_attention(q_features, k_features, v, epsilon: float = 1e-8):
  """FAVOR+'s linear attention: phi(q) (phi(k)^T v) / (phi(q) sum_t phi(k_t) + epsilon) over `[..., T, m]`
  features and `[..., T, d]` values, in float32; O(T m d) instead of O(T^2 d)."""
  denominator = jnp.einsum("...tm,...m->...t", q_features, k_features.sum(axis=-2))[..., None]
  context = jnp.einsum("...td,...tm->...md", v.astype(jnp.float32), k_features)
  return jnp.einsum("...tm,...md->...td", q_features, context) / (denominator + epsilon)


def orthogonal_directions(key, shape, dtype=jnp.float32):
  """`[m, d]` random directions for FAVOR+: blocks of d orthogonal rows (the paper's ORF, sec. 2.4), each row
  scaled to norm sqrt(d) (performer-pytorch's `scaling=1`)."""
  m, d = shape
  blocks = [jnp.linalg.qr(jax.random.normal(k, (d, d), jnp.float32))[0].T for k in jax.random.split(key, -(-m // d))]
  return (jnp.concatenate(blocks)[:m] * math.sqrt(d)).astype(dtype)


class PerformerAttention(nn.Module):
  """Multi-head FAVOR+ self-attention (Performer). `nb_features` random directions per layer (default
  d log d for head dim d, the paper's choice), drawn once at init from the `params` rng and never trained
  (`random_features`, gradient stopped; exempt from weight decay). q and k are scaled by d^-1/4 so that
  phi(q) phi(k)^T estimates exp(q k^T / sqrt(d))."""
  num_heads: int
  nb_features: int = 0  # 0: int(head_dim * ln(head_dim))
  qkv_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    head_dim = dim // self.num_heads
    m = self.nb_features or max(1, int(head_dim * math.log(head_dim)))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q, k, v = qkv_heads(x, self.num_heads, self.qkv_bias, **kw)
    w = jax.lax.stop_gradient(self.param("random_features", with_axes(orthogonal_directions, (None, "kv")),
                                         (m, head_dim), self.param_dtype))
    scale = head_dim ** -0.25
    y = favor_attention(positive_features(q * scale, w, True), positive_features(k * scale, w, True), v, 1e-6)
    return merge_heads(y.astype(self.dtype), dim, **kw)


class LinformerAttention(nn.Module):
  """Multi-head self-attention with keys and values projected to `k` tokens along the sequence (Linformer,
  eq. 7); `E` (`proj_k`) and `F` (`proj_v`) `[N, k]` are shared by the heads and tied to the token count N."""
  num_heads: int
  k: int = 64
  qkv_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, dim = x.shape[-2:]
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    q, k, v = qkv_heads(x, self.num_heads, self.qkv_bias, **kw)
    init = nn.initializers.normal(1.0 / math.sqrt(self.k))  # the official init: std 1 / sqrt(k)
    e = self.param("proj_k", with_axes(init, ("seq", None)), (n, self.k), self.param_dtype).astype(self.dtype)
    f = self.param("proj_v", with_axes(init, ("seq", None)), (n, self.k), self.param_dtype).astype(self.dtype)
    k, v = jnp.einsum("bhnd,nk->bhkd", k, e), jnp.einsum("bhnd,nk->bhkd", v, f)
    logits = jnp.einsum("bhqd,bhkd->bhqk", q * jnp.asarray(head_dim ** -0.5, q.dtype), k).astype(jnp.float32)
    y = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(logits, axis=-1).astype(self.dtype), v)
    return merge_heads(y, dim, **kw)
