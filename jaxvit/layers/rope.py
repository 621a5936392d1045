"""Rotary position embedding for vision (RoPE-ViT, Heo et al. 2024, arXiv:2403.13298), axial and mixed.

Each query / key channel pair (2j, 2j + 1) of a patch at column x, row y is rotated by the angle
theta_j = x f^x_j + y f^y_j (the paper's eq. 8 / 11), so q . k depends only on the patches' offset.
RoPE-Axial fixes the frequencies: the first half of the pairs turn with x, the second with y, at
1 / theta^(k / (d / 4)) (eq. 9-10). RoPE-Mixed learns `freqs` `[2, heads, d / 2]` per block and head,
initialised at the same magnitudes turned by a random angle per head (eq. 11). Prefix tokens (class,
distillation, registers) are not rotated. timm's `pos_embed_sincos.py` (`RotaryEmbeddingCat` with
`grid_indexing="xy"`, `RotaryEmbeddingMixed`) and `AttentionRope` are the files followed.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import with_axes

ROPES = ("axial", "mixed")
DEFAULT_THETA = {"axial": 100.0, "mixed": 10.0}  # the paper's (and timm's) base for each kind


def patch_coords(grid) -> np.ndarray:
  """`[h * w, 2]` (x, y) = (column, row) of each patch, in the row-major token order."""
  h, w = grid
  y, x = np.mgrid[:h, :w]
  return np.stack([x.reshape(-1), y.reshape(-1)], axis=-1).astype(np.float32)


def magnitudes(head_dim: int, theta: float) -> np.ndarray:
  """The `head_dim / 4` frequencies 1 / theta^(k / (head_dim / 4)) each axis turns at."""
  return (1.0 / theta ** (np.arange(0, head_dim, 4) / head_dim)).astype(np.float32)


def axial_freqs(head_dim: int, theta: float) -> np.ndarray:
  """`[2, 1, head_dim / 2]` (x, y) frequencies of RoPE-Axial: x turns the first half of the pairs, y the rest."""
  mag, zero = magnitudes(head_dim, theta), np.zeros(head_dim // 4, np.float32)
  return np.stack([np.concatenate([mag, zero]), np.concatenate([zero, mag])])[:, None]


def mixed_freqs_init(theta: float):
  """RoPE-Mixed's initialiser for `[2, heads, head_dim / 2]`: per head a random angle a, the x / y
  frequencies of the two halves of the pairs are mag (cos a, sin a) and mag (cos(a + pi/2), sin(a + pi/2))."""
  def init(key, shape, dtype=jnp.float32):
    _, heads, half = shape
    mag = jnp.asarray(magnitudes(2 * half, theta))
    angle = jax.random.uniform(key, (heads, 1), jnp.float32, 0.0, 2 * np.pi)
    fx = jnp.concatenate([mag * jnp.cos(angle), mag * jnp.cos(angle + np.pi / 2)], axis=-1)
    fy = jnp.concatenate([mag * jnp.sin(angle), mag * jnp.sin(angle + np.pi / 2)], axis=-1)
    return jnp.stack([fx, fy]).astype(dtype)
  return init


class RotaryEmbedding(nn.Module):
  """`(sin, cos)`, each `[heads or 1, h * w, head_dim]` (each angle repeated for its channel pair), for the
  patches of `grid`; the mixed kind owns the learned `freqs`."""
  kind: str
  grid: tuple
  num_heads: int
  head_dim: int
  theta: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self):
    if self.kind not in ROPES:
      raise ValueError(f"RotaryEmbedding: kind={self.kind!r}; accepted: {ROPES}")
    if self.head_dim % 4:
      raise ValueError(f"RoPE needs a head dim divisible by 4, got {self.head_dim}")
    if self.kind == "axial":
      freqs = jnp.asarray(axial_freqs(self.head_dim, self.theta))
    else:
      freqs = self.param("freqs", with_axes(mixed_freqs_init(self.theta), (None, "heads", "kv")),
                         (2, self.num_heads, self.head_dim // 2), self.param_dtype).astype(jnp.float32)
    coords = jnp.asarray(patch_coords(self.grid))[:, :, None, None]  # [N, 2, 1, 1]
    angles = (coords[:, 0] * freqs[0] + coords[:, 1] * freqs[1]).transpose(1, 0, 2)  # [H, N, d / 2] (no matmul)
    angles = jnp.repeat(angles, 2, axis=-1)  # [H, N, d]: pairs (2j, 2j + 1) share angle j
    return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x, sin, cos):
  """Rotates channel pairs of `x` `[B, H, N, d]` by the angles (`sin`, `cos` `[H or 1, N, d]`): the last N
  tokens turn, leading (prefix) tokens stay. (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
  n = sin.shape[-2]
  prefix, patches = x[..., :x.shape[-2] - n, :], x[..., x.shape[-2] - n:, :]
  pairs = patches.reshape(patches.shape[:-1] + (-1, 2))
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(patches.shape)
  turned = (patches * cos + rotated * sin).astype(x.dtype)
  return jnp.concatenate([prefix, turned], axis=-2)
