"""SwiftFormer's efficient additive attention (Shaker et al. 2023, arXiv:2303.15446): linear in the tokens.

With L2-normalised query and key maps Q = norm(x W_q), K = norm(x W_k) (`to_query`, `to_key`), per-token
weights alpha = Q w_a / sqrt(d) (`w_g`), L2-normalised over the tokens, pool a global query q = sum_i alpha_i Q_i;
it interacts with every key element-wise and a linear layer replaces the key-value product:
out = W_final (W_proj (q * K) + Q). timm's `swiftformer.py` (`EfficientAdditiveAttention`) is the file followed.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import dense, with_axes


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
  """x / max(||x||_2, eps) along `axis`: torch's `F.normalize`."""
  norm_sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(norm_sq, jnp.asarray(eps * eps, x.dtype)))


class EfficientAdditiveAttention(nn.Module):
  """`[B, N, D] -> [B, N, token_dim]`; `num_heads` widens the query / key (timm: 1, token_dim = D)."""
  token_dim: int
  num_heads: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    width = self.token_dim * self.num_heads
    query = l2_normalize(dense(width, ("embed", "kv"), name="to_query", **kw)(x))  # [B, N, width]
    key = l2_normalize(dense(width, ("embed", "kv"), name="to_key", **kw)(x))
    w_g = self.param("w_g", with_axes(nn.initializers.normal(1.0), ("kv", None)), (width, 1), self.param_dtype)
    alpha = query @ w_g.astype(self.dtype) * (self.token_dim ** -0.5)  # [B, N, 1]
    alpha = l2_normalize(alpha, axis=1)  # over the tokens
    global_query = jnp.sum(alpha * query, axis=1, keepdims=True)  # [B, 1, width]
    out = dense(width, (None, "kv"), name="proj", **kw)(global_query * key) + query
    return dense(self.token_dim, ("kv", "embed"), name="final", **kw)(out)
