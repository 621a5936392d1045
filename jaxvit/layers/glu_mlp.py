"""Gated linear unit feed-forward (GLU, Dauphin et al. 2016, arXiv:1612.08083; with SiLU: SwiGLU, Shazeer 2020,
arXiv:2002.05202, eq. 5)."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import dense


class GluMlp(nn.Module):
  """fc1 -> halves `[h1, h2]` -> `h1 * act(h2)` -> dropout -> fc2 -> dropout, on the channel axis;
  timm's `GluMlp` (gate on the second half; `fc1` to `hidden_dim`, `fc2` from `hidden_dim / 2`)."""
  hidden_dim: int  # even: fc1's width, twice the gated width
  act: Callable = jax.nn.sigmoid
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h1, h2 = jnp.split(dense(self.hidden_dim, ("embed", "mlp"), name="fc1", **kw)(x), 2, axis=-1)
    h = nn.Dropout(self.drop_rate)(h1 * self.act(h2), deterministic=not train)
    h = dense(x.shape[-1], ("mlp", "embed"), name="fc2", **kw)(h)
    return nn.Dropout(self.drop_rate)(h, deterministic=not train)
