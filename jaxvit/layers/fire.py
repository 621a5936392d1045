"""FIRE: functional interpolation for relative positions (Li et al., ICLR 2024, arXiv:2310.04418, sec. 3).

FIRE adds to the attention logit of query i and key j the learned bias b(i, j) = f_theta(psi(i - j) / psi(max(L, i)))
per head: f_theta a small MLP (1 -> width -> heads, ReLU), psi(x) = log(c x + 1) a learned log transform, and the
normaliser psi(max(L, i)) the paper's progressive interpolation (the query's position i, floored by a learned
threshold L) that maps every relative distance into [0, 1] at any sequence length. The paper's reference code
(its appendix, followed here) initialises c = 0.1 and L = 512 (learned as `L_multiplier` x 512), width 32, eps 1e-6.

For images (jaxvit's 2D choice; the paper is 1D and causal): the offset is the 2D patch offset (dy, dx) of query i
from key j, each axis interpolated on its own and keeping its sign, since attention here is bidirectional (a bias of
|i - j| could not tell left from right): u_a = sign(d_a) psi(|d_a|) / (psi(max(L, n_a - 1)) + eps) with n_a the
grid's side (n_a - 1 its largest offset, the analogue of a causal query's i), and one MLP maps (u_y, u_x) to the
heads' biases. That is the form of Swin V2's log-spaced continuous position bias (an MLP on sign(d) log(1 + |d|) of
the 2D offset, arXiv:2111.09883; `rel_pos_bias.RelPosMlp`), which FIRE's learned psi and interpolation generalise.
The bias depends on the offset only, so the MLP runs once per distinct offset ((2h - 1)(2w - 1) of them) and the
`[N, N]` map is gathered.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import dense
from jaxvit.layers.rel_pos_bias import relative_position_index


def relative_offsets(grid) -> tuple[np.ndarray, np.ndarray]:
  """`(offsets, index)`: the `[(2h - 1)(2w - 1), 2]` distinct (dy, dx) offsets of an h x w patch grid, row-major, and
  `[N, N]` the row of each (query i, key j) pair's offset i - j (FIRE's i - j; tokens in row-major order)."""
  h, w = grid
  dy, dx = np.mgrid[-(h - 1):h, -(w - 1):w]
  return np.stack([dy.reshape(-1), dx.reshape(-1)], axis=-1).astype(np.float32), relative_position_index(grid)


class Fire(nn.Module):
  """FIRE's attention bias `[1, heads, N, N]` for `num_tokens` tokens whose last h * w are the patches of `grid`;
  rows and columns of the leading (prefix) tokens are zero. Parameters as the reference code names them: `mlp_0`,
  `mlp_2` (its `mlp` `Sequential`), `c`, `L_multiplier`."""
  num_heads: int
  grid: tuple
  mlp_width: int = 32
  init_c: float = 0.1
  init_L: float = 512.0
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def normalised_offsets(self, offsets):
    """`[M, 2]` (dy, dx) -> FIRE's interpolated positions sign(d) psi(|d|) / (psi(max(L, n - 1)) + eps), per axis."""
    c = self.param("c", nn.initializers.constant(self.init_c), (), self.param_dtype).astype(jnp.float32)
    multiplier = self.param("L_multiplier", nn.initializers.ones, (), self.param_dtype).astype(jnp.float32)
    threshold = jnp.abs(multiplier * self.init_L)
    largest = jnp.asarray([n - 1 for n in self.grid], jnp.float32)
    psi = lambda d: jnp.log(jnp.abs(c * d) + 1.0)  # the reference's log(|c x| + 1)
    return jnp.sign(offsets) * psi(offsets) / (psi(jnp.maximum(largest, threshold)) + self.eps)

  @nn.compact
  def __call__(self, num_tokens: int):
    h, w = self.grid
    n = h * w
    if num_tokens < n:
      raise ValueError(f"Fire: {num_tokens} tokens cannot hold the {h}x{w} patch grid")
    offsets, index = relative_offsets(self.grid)
    u = self.normalised_offsets(jnp.asarray(offsets))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    hidden = jax.nn.relu(dense(self.mlp_width, (None, "mlp"), name="mlp_0", **kw)(u))
    table = dense(self.num_heads, ("mlp", "heads"), name="mlp_2", **kw)(hidden)  # [M, heads]
    bias = jnp.take(table, jnp.asarray(index), axis=0).transpose(2, 0, 1)  # [heads, n, n]
    prefix = num_tokens - n
    return jnp.pad(bias, ((0, 0), (prefix, 0), (prefix, 0)))[None]
