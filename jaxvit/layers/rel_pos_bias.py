"""Relative position biases for attention inside a `P x P` window (`B` in softmax(QK^T / sqrt(d) + B) V).

Three parametrisations, each returning `[heads, P * P, P * P]` (query, key; row-major tokens):
- `RelPosBiasTf`: MaxViT's (Tu et al. 2022, arXiv:2204.01697, sec. 3.1, eq. 1 "relative attention"), a
  learned table `[heads, 2P - 1, 2P - 1]` indexed by (key - query) offsets through two one-hot einsums,
  as the official TensorFlow code computes it (so MAC counts agree with timm's published numbers).
- `RelPosBias`: Swin's (Liu et al. 2021, arXiv:2103.14030, eq. 4), a table `[(2P - 1)^2, heads]`
  indexed by (query - key) offsets.
- `RelPosMlp`: a small MLP on log-spaced offsets (Swin V2's continuous bias, arXiv:2111.09883, eq. 4,
  timm's "cr" log coordinates sign(d) log(1 + |d|), no sigmoid).
timm's `layers/pos_embed_rel.py` is the file followed.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import dense, with_axes


def one_hot_offsets(n: int) -> np.ndarray:
  """`L[i, x, v] = 1` iff `v = x - i + n - 1`: picks the (key x - query i) entry of a `2n - 1` table."""
  i, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
  return np.eye(2 * n - 1, dtype=np.float32)[x - i + n - 1]


def relative_position_index(size: Sequence[int]) -> np.ndarray:
  """`[P_h P_w, P_h P_w]` index of the (query - key) offset into a row-major `(2P_h - 1) x (2P_w - 1)` table."""
  h, w = size
  coords = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).reshape(2, -1)
  rel = coords[:, :, None] - coords[:, None, :]
  return (rel[0] + h - 1) * (2 * w - 1) + rel[1] + w - 1


class RelPosBiasTf(nn.Module):
  """MaxViT's relative attention bias; param `relative_position_bias_table` `[heads, 2P_h - 1, 2P_w - 1]`."""
  num_heads: int
  size: Sequence[int]
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, dtype=jnp.float32, train: bool = False):
    h, w = self.size
    table = self.param("relative_position_bias_table", with_axes(nn.initializers.normal(0.02), ("heads", None, None)),
                       (self.num_heads, 2 * h - 1, 2 * w - 1), self.param_dtype).astype(dtype)
    bias = jnp.einsum("nhw,ixh->nixw", table, jnp.asarray(one_hot_offsets(h), dtype))
    bias = jnp.einsum("nixw,jyw->nijxy", bias, jnp.asarray(one_hot_offsets(w), dtype))
    return bias.reshape(self.num_heads, h * w, h * w)


class RelPosBias(nn.Module):
  """Swin's relative position bias; param `relative_position_bias_table` `[(2P_h - 1)(2P_w - 1), heads]`."""
  num_heads: int
  size: Sequence[int]
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, dtype=jnp.float32, train: bool = False):
    h, w = self.size
    table = self.param("relative_position_bias_table", with_axes(jax.nn.initializers.truncated_normal(0.02),
                                                                 (None, "heads")),
                       ((2 * h - 1) * (2 * w - 1), self.num_heads), self.param_dtype).astype(dtype)
    return table[relative_position_index(self.size)].transpose(2, 0, 1)


class _OffsetMlp(nn.Module):
  """fc1 -> ReLU -> dropout 0.125 -> fc2 on the offset coordinates (timm's `Mlp(drop=(0.125, 0))`)."""
  hidden_dim: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.relu(dense(self.hidden_dim, (None, "mlp"), name="fc1", **kw)(x))
    x = nn.Dropout(0.125)(x, deterministic=not train)
    return dense(self.num_heads, ("mlp", "heads"), name="fc2", **kw)(x)


class RelPosMlp(nn.Module):
  """A bias computed by an MLP (`mlp`, `hidden_dim` wide) from log-spaced (query - key) offsets."""
  num_heads: int
  size: Sequence[int]
  hidden_dim: int = 512
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, dtype=jnp.float32, train: bool = False):
    h, w = self.size
    offsets = np.stack(np.meshgrid(np.arange(1 - h, h), np.arange(1 - w, w), indexing="ij"), -1).astype(np.float32)
    coords = np.sign(offsets) * np.log1p(np.abs(offsets))  # [2P_h - 1, 2P_w - 1, 2]
    table = _OffsetMlp(self.hidden_dim, self.num_heads, dtype=dtype, param_dtype=self.param_dtype,
                       name="mlp")(jnp.asarray(coords, dtype), train)
    return table.reshape(-1, self.num_heads)[relative_position_index(self.size)].transpose(2, 0, 1)
