"""Hire-MLP's token mixer (Guo et al. 2022, "Hire-MLP: Vision MLP via Hierarchical Rearrangement",
arXiv:2108.13341, sec. 3.2-3.3); the official ggjy/Hire-Wave-MLP.pytorch `mlp_based/hire_mlp.py` (`HireMLP`) is
the file followed.

On a map `[B, H, W, C]` three branches mix tokens:
- height branch: *inner-region rearrangement* stacks every `pixel` consecutive rows into the channels
  (`[H, W, C] -> [H / pixel, W, pixel C]`), a channel MLP (`mlp_h1`: pixel C -> C / 2 without bias, BatchNorm,
  ReLU, `mlp_h2`: -> pixel C) mixes the region's tokens, and the inverse rearrangement restores the map; before
  it, *cross-region rearrangement* rolls the rows by `step` (regions then straddle their neighbours) and rolls
  them back after. The rows are circularly padded to a multiple of `pixel` and cropped after (pad mode 'c').
- width branch: the same along the columns (`mlp_w1`, `mlp_w1_norm`, `mlp_w2`);
- channel branch: a linear layer `mlp_c`.
The three are mixed by split attention (`reweight`: an MLP C -> C / 4 -> 3C on their spatial mean, softmax over
the branches per channel), then `proj`. 1x1 convolutions are Dense layers on NHWC maps.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.conv import batch_norm
from jaxvit.layers.init import dense
from jaxvit.layers.mlp import Mlp


def _regions(x, pixel: int, axis: int):
  """Inner-region rearrangement along `axis` (1: rows, 2: columns) of `[B, H, W, C]`: every `pixel` consecutive
  lines join the channels (channel c * pixel + j holds line j of the region), `[B, H / pixel, W, C pixel]` for
  rows."""
  b, h, w, c = x.shape
  if axis == 1:
    return x.reshape(b, h // pixel, pixel, w, c).transpose(0, 1, 3, 4, 2).reshape(b, h // pixel, w, c * pixel)
  return x.reshape(b, h, w // pixel, pixel, c).transpose(0, 1, 2, 4, 3).reshape(b, h, w // pixel, c * pixel)


def _unregions(x, pixel: int, axis: int):
  """The inverse of `_regions`."""
  b, h, w, cp = x.shape
  c = cp // pixel
  if axis == 1:
    return x.reshape(b, h, w, c, pixel).transpose(0, 1, 4, 2, 3).reshape(b, h * pixel, w, c)
  return x.reshape(b, h, w, c, pixel).transpose(0, 1, 2, 4, 3).reshape(b, h, w * pixel, c)


class HireMLP(nn.Module):
  """Hire-MLP's token mixer on `[B, H, W, C]` (any H, W): inner-region mixing over `pixel` lines, shifted by
  `step` lines across regions (0: no shift), along the height and the width, plus a channel branch, fused by
  split attention."""
  pixel: int = 2
  step: int = 0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = x.shape
    x = x.astype(self.dtype)
    branches = []
    for axis, tag in ((1, "h"), (2, "w")):
      length = x.shape[axis]
      y = jnp.roll(x, self.step, axis=axis) if self.step else x
      pad = [(0, 0)] * 4
      pad[axis] = (0, -length % self.pixel)
      y = _regions(jnp.pad(y, pad, mode="wrap"), self.pixel, axis)
      y = dense(c // 2, ("embed", "mlp"), use_bias=False, name=f"mlp_{tag}1", **kw)(y)
      y = nn.relu(batch_norm(self.train, name=f"mlp_{tag}1_norm", **kw)(y))
      y = dense(c * self.pixel, ("mlp", "embed"), name=f"mlp_{tag}2", **kw)(y)
      y = jax.lax.slice_in_dim(_unregions(y, self.pixel, axis), 0, length, axis=axis)
      branches.append(jnp.roll(y, -self.step, axis=axis) if self.step else y)
    branches.append(dense(c, ("embed", "mlp"), name="mlp_c", **kw)(x))
    pooled = sum(branches).mean(axis=(1, 2))  # [B, C]
    weights = Mlp(c // 4, out_dim=3 * c, name="reweight", **kw)(pooled, train=self.train)
    weights = jax.nn.softmax(weights.reshape(b, c, 3).astype(jnp.float32), axis=-1).astype(self.dtype)
    y = sum(branch * weights[:, None, None, :, k] for k, branch in enumerate(branches))
    return dense(c, ("mlp", "embed"), name="proj", **kw)(y)
