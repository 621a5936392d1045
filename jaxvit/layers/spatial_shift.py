"""Spatial-shift token mixing: S2-MLP (Yu et al. 2022, arXiv:2106.07477, Sec. 3.2, Algorithm 1) and S2-MLPv2's
split-shift-fuse mixer (Yu et al. 2021, arXiv:2108.01072, Sec. 3: expansion, two shifts, split attention).

The spatial shift is parameter-free: the channels are cut into four groups (at `c // 4`, `c // 2`, `3c // 4`, as
Algorithm 1's slices) and each group moves one pixel along one direction of the map; the row / column the shift
leaves uncovered keeps its own values (Algorithm 1 copies `x[:w-1]` into `x[1:]` and leaves `x[0]` untouched).
Any map size works (a 1-pixel axis is left unchanged).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import dense
from jaxvit.layers.mlp import gelu


def _shift(x, axis: int, step: int):
  """Moves `x` one pixel along `axis` (+1: towards higher indices), keeping the uncovered border line."""
  n = x.shape[axis]
  take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)  # noqa: E731
  if n == 1:
    return x
  if step > 0:  # x[1:] = x[:-1]
    return jnp.concatenate([take(0, 1), take(0, n - 1)], axis=axis)
  return jnp.concatenate([take(1, n), take(n - 1, n)], axis=axis)  # x[:-1] = x[1:]


def spatial_shift(x, first_axis: int = 1):
  """Algorithm 1 on NHWC `x` `[B, H, W, C]`: channel groups 1-4 shift by +1 / -1 along `first_axis` (1: the rows,
  the pseudo-code's first spatial axis), then +1 / -1 along the other spatial axis. S2-MLPv2's second shift
  (`spatial_shift2`) is `first_axis=2`."""
  if first_axis not in (1, 2):
    raise ValueError(f"spatial_shift: first_axis={first_axis!r}; accepted: 1 or 2 (the spatial axes of NHWC)")
  c = x.shape[-1]
  other = 3 - first_axis
  bounds = (0, c // 4, c // 2, 3 * c // 4, c)
  moves = ((first_axis, 1), (first_axis, -1), (other, 1), (other, -1))
  return jnp.concatenate([_shift(x[..., lo:hi], axis, step) for (lo, hi), (axis, step) in
                          zip(zip(bounds[:-1], bounds[1:]), moves)], axis=-1)


class SpatialShiftMLP(nn.Module):
  """S2-MLP's spatial-shift module (Sec. 3.2): `MLP2(S(GELU(MLP1(x))))`, `MLP1`, `MLP2` channel-mixing `C -> C`."""
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x.shape[-1]
    x = gelu(dense(c, ("embed", "mlp"), name="mlp1", **kw)(x))
    return dense(c, ("mlp", "embed"), name="mlp2", **kw)(spatial_shift(x))


class SplitAttention(nn.Module):
  """S2-MLPv2's split attention (Sec. 3, after ResNeSt): `a = sum_k sum_i X_k[i]`, `a_hat = GELU(a W1) W2`
  (`W1: C -> hidden`, `W2: hidden -> K C`, no biases), softmax over the K parts per channel, `sum_k a_k * X_k`.
  `[B, K, H, W, C] -> [B, H, W, C]`."""
  hidden_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, parts):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, k, _, _, c = parts.shape
    a = parts.sum(axis=(1, 2, 3))  # [B, C]
    a = dense(self.hidden_dim, ("embed", "mlp"), use_bias=False, name="mlp1", **kw)(a)
    a = dense(k * c, ("mlp", "embed"), use_bias=False, name="mlp2", **kw)(gelu(a))
    weights = jax.nn.softmax(a.reshape(b, k, c).astype(jnp.float32), axis=1).astype(parts.dtype)  # [B, K, C]
    return jnp.einsum("bkhwc,bkc->bhwc", parts, weights)


class SplitShiftMLP(nn.Module):
  """S2-MLPv2's mixer (Sec. 3): `MLP1` expands `C -> 3C`, the parts are shifted by `spatial_shift` (first_axis 1),
  by `spatial_shift` (first_axis 2) and kept, fused by `SplitAttention`, and `MLP2` maps back `C -> C`."""
  split_hidden_ratio: float = 0.25
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x.shape[-1]
    x = dense(3 * c, ("embed", "mlp"), name="mlp1", **kw)(x)
    parts = jnp.stack([spatial_shift(x[..., :c], 1), spatial_shift(x[..., c:2 * c], 2), x[..., 2 * c:]], axis=1)
    x = SplitAttention(int(c * self.split_hidden_ratio), name="split_attention", **kw)(parts)
    return dense(c, ("mlp", "embed"), name="mlp2", **kw)(x)
