"""Positional spatial gating unit, PoSGU (PosMLP: Wang et al. 2022, "Parameterization of Cross-token Relations
with Relative Positional Encoding for Vision MLP", arXiv:2207.07284, sec. 3); the official
`Zhicaiwww/PosMLP` `models/posmlp.py` (`PoSGU`, `PosMLPLayer`) and `models/posmlp2D.py` (`QuaMap`,
`LearnedPosMap`) are the files followed.

gMLP's spatial gating (`jaxvit.layers.mixers.SpatialGatingUnit`) learns a free N x N token-mixing matrix; PoSGU
generates it from relative positions instead, one matrix per channel group (gamma groups, channel c in group
c mod gamma): u, v = split(x); out = (W_pos u + b) * v, with W_pos[s, m, n] a function of the offset between
tokens m and n. Two parameterisations:
  quadratic (GQPE, the official default): W_pos[s] = softmax_n(-1/2 (r - delta_s)^T Sigma_s^-1 (r - delta_s)) up
            to the terms constant in n, r = (dx, dy) the offset, a learned centre delta_s and a symmetric
            positive inverse covariance Sigma_s^-1 = A_s A_s^T per group (eq. 7-8): 6 parameters per group;
  learned   (LRPE): W_pos[s] read from a learned (2h - 1)(2w - 1) table per group, Swin-style (eq. 5).
The offsets follow the official `rel_indices`: dx = x_n - x_m, dy = y_m - y_n.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import dense, with_axes, zeros
from jaxvit.layers.mlp import gelu
from jaxvit.layers.rel_pos_bias import RelPosBias

POSITION_MAPS = ("quadratic", "learned")


def quadratic_offsets(grid) -> np.ndarray:
  """`[N, N, 5]` (dx, dy, dx^2, dy^2, dx dy) per (m, n) token pair, as the official `QuaMap.get_rel_indices`."""
  h, w = grid
  ys, xs = np.divmod(np.arange(h * w), w)
  dx = xs[None, :] - xs[:, None]
  dy = ys[:, None] - ys[None, :]
  return np.stack([dx, dy, dx ** 2, dy ** 2, dx * dy], axis=-1).astype(np.float32)


def quadratic_map(centres, spreads, grid):
  """GQPE's `[groups, N, N]` token-mixing weights: softmax over n of -1/2 (r - delta)^T A A^T (r - delta) without
  its n-independent term, from the centres delta `[groups, 2]` and spreads A `[groups, 2, 2]` (official
  `QuaMap.forward_pos`, generalised and symmetric)."""
  inv_cov = jnp.einsum("gij,gkj->gik", spreads, spreads).astype(jnp.float32)
  a, b, c, d = inv_cov[:, 0, 0], inv_cov[:, 0, 1], inv_cov[:, 1, 1], inv_cov[:, 1, 0]
  d1, d2 = centres[:, 0].astype(jnp.float32), centres[:, 1].astype(jnp.float32)
  coefficients = -0.5 * jnp.stack([-2 * (a * d1 + b * d2), -2 * (c * d2 + d * d1), a, c, b + d], axis=-1)
  return jax.nn.softmax(jnp.einsum("mnk,gk->gmn", jnp.asarray(quadratic_offsets(grid)), coefficients), axis=-1)


class PositionalGatingUnit(nn.Module):
  """PoSGU on `[B, N, D]` (N = h * w patch tokens, no prefix tokens) -> `[B, N, D / 2]`: the first half u is mixed
  over the tokens by the positional map of its channel group, plus a per-token bias, then gates the second
  half v. Params: `attention_centers` `[groups, 2]`, `attention_spreads` `[groups, 2, 2]` (quadratic) or the
  table (learned), and `token_proj_n_bias` `[N]`."""
  grid: tuple
  groups: int
  position_map: str = "quadratic"
  init_std: float = 1e-2  # the official att_std: centres ~ N(0, std), spreads ~ I + N(0, std)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def weights(self):
    """`[groups, N, N]`: row m holds the weights token m gives every token n."""
    if self.position_map == "learned":
      return RelPosBias(self.groups, self.grid, self.param_dtype, name="pos")(jnp.float32)
    normal = lambda mean: lambda key, shape, dtype: mean + self.init_std * jax.random.normal(key, shape, dtype)
    centres = self.param("attention_centers", normal(0.0), (self.groups, 2), self.param_dtype)
    spreads = self.param("attention_spreads", normal(jnp.eye(2)), (self.groups, 2, 2), self.param_dtype)
    return quadratic_map(centres, spreads, self.grid)

  @nn.compact
  def __call__(self, x):
    if self.position_map not in POSITION_MAPS:
      raise ValueError(f"PositionalGatingUnit: position_map={self.position_map!r}; accepted: {POSITION_MAPS}")
    b, n, dim = x.shape
    h, w = self.grid
    if n != h * w or dim % 2 or (dim // 2) % self.groups:
      raise ValueError(f"PositionalGatingUnit: input {x.shape} needs {h}x{w} tokens and a width 2 x a multiple "
                       f"of groups={self.groups}")
    u, v = jnp.split(x, 2, axis=-1)
    u = u.reshape(b, n, -1, self.groups)  # channel c = j * groups + s: the official '(v s)'
    mixed = jnp.einsum("smn,bnjs->bmjs", self.weights().astype(self.dtype), u.astype(self.dtype))
    bias = self.param("token_proj_n_bias", with_axes(zeros, ("seq",)), (n,), self.param_dtype)
    return (mixed + bias.astype(self.dtype)[None, :, None, None]).reshape(b, n, dim // 2) * v


class PosMlpMixer(nn.Module):
  """PosMLP's gating layer as a token mixer (official `PosMLPLayer.forward_gate` without its norm and residual,
  which the ViT block supplies): `proj_c_e` (C -> `hidden_ratio` C) -> GELU -> PoSGU -> `proj_c_s` (-> C)."""
  grid: tuple
  groups: int
  hidden_ratio: float = 2.0
  position_map: str = "quadratic"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = x.shape[-1]
    y = gelu(dense(int(dim * self.hidden_ratio), ("embed", "mlp"), name="proj_c_e", **kw)(x))
    y = PositionalGatingUnit(self.grid, self.groups, self.position_map, name="gate_unit", **kw)(y)
    return dense(dim, ("mlp", "embed"), name="proj_c_s", **kw)(y)
