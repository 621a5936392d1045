"""Linearized relative positional encoding (LRPE, Qin et al., TMLR 2023, arXiv:2307.09270): its unitary solution.

LRPE's canonical form turns queries and keys by position-dependent unitary matrices, a_st = q_s^H W_s^H W_t k_t, so
the product depends on t - s only and factorises (linear attention keeps it); the unitary family is
W_s = P^H Lambda^(s) P with Lambda^(s) = diag(exp(i s theta_j)). jaxvit implements the member with P = I and learned
angles on real q, k, taking the real part: the authors' `Urpe` with `core_matrix=4` (complex exponential),
`p_matrix=1` (identity) and `theta_learned` (a parameter initialised at 10000^(-2j / d)) in OpenNLPLab/fairseq-evo
`fairseq/modules/positional_encoding/urpe.py` @34b5191, in the real form `concat([x cos(s theta), x sin(s theta)])`:

  q'_s = [q_s cos(phi_s), q_s sin(phi_s)],    q'_s . k'_t = sum_j q_sj k_tj cos(phi_sj - phi_tj),

for images with phi_sj = x_s theta^x_j + y_s theta^y_j, (x_s, y_s) the patch's column and row, and `theta`
`[2, heads, d]` initialised axially (the first half of each head's channels turn with x, the rest with y, at
1 / base^(k / (d / 2)); base 100 as RoPE-Axial's for 14 x 14 grids). Prefix tokens get angle 0: [q, 0].

How it differs from RoPE (`jaxvit.layers.rope`): RoPE is LRPE's orthogonal member, rotating channel pairs, so a pair
contributes (q_a k_a + q_b k_b) cos + (q_a k_b - q_b k_a) sin of the angle difference, odd as well as even in the
offset. This unitary member pairs no channels, turns each channel by its own angle and keeps the cosine only: the
logits are even in the offset (a patch's left and right neighbours at the same distance are told apart by content
only), and q . k runs at twice the head dim. A real orthogonal basis P (the DCT or Householder choices in the
authors' code) turning q and k alike adds nothing to softmax attention: it folds into the learned q / k projections.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import with_axes
from jaxvit.layers.rope import patch_coords


def axial_angles_init(base: float):
  """`[2, heads, d]` (x, y) angle rates: x turns channels [0, d / 2) at 1 / base^(k / (d / 2)), y the rest alike."""
  def init(key, shape, dtype=jnp.float32):
    del key
    _, heads, d = shape
    half = d // 2
    rates = lambda n: 1.0 / base ** (np.arange(n) / max(n, 1))
    tx = np.concatenate([rates(half), np.zeros(d - half)])
    ty = np.concatenate([np.zeros(half), rates(d - half)])
    return jnp.asarray(np.broadcast_to(np.stack([tx, ty])[:, None], shape), dtype)
  return init


def lrpe_angles(theta, coords):
  """`[H, N, d]` angles phi = x theta^x + y theta^y of the patches at `coords` `[N, 2]` (x, y)."""
  coords = jnp.asarray(coords, jnp.float32)[:, :, None, None]  # [N, 2, 1, 1]
  return (coords[:, 0] * theta[0] + coords[:, 1] * theta[1]).transpose(1, 0, 2)


class Lrpe(nn.Module):
  """`(sin, cos)` `[heads, h * w, head_dim]` of the patches of `grid`; owns the learned angle rates `theta`."""
  grid: tuple
  num_heads: int
  head_dim: int
  base: float = 100.0
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self):
    theta = self.param("theta", with_axes(axial_angles_init(self.base), (None, "heads", "kv")),
                       (2, self.num_heads, self.head_dim), self.param_dtype).astype(jnp.float32)
    angles = lrpe_angles(theta, patch_coords(self.grid))
    return jnp.sin(angles), jnp.cos(angles)


def apply_lrpe(x, sin, cos):
  """`[B, H, N, d] -> [B, H, N, 2d]`: the last N' tokens (`sin`, `cos` `[H or 1, N', d]`) become
  [x cos, x sin], the leading (prefix) tokens [x, 0] (angle 0). Norms are kept, so attention's 1 / sqrt(d) stays."""
  n = sin.shape[-2]
  prefix, patches = x[..., :x.shape[-2] - n, :], x[..., x.shape[-2] - n:, :]
  turned = jnp.concatenate([patches * cos, patches * sin], axis=-1).astype(x.dtype)
  return jnp.concatenate([jnp.concatenate([prefix, jnp.zeros_like(prefix)], axis=-1), turned], axis=-2)
