"""LayerScale (CaiT, Touvron et al. 2021, arXiv:2103.17239, eq. 4): a learned per-channel gain."""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.init import with_axes


class LayerScale(nn.Module):
  """`x * gamma`, gamma initialised to `init_values` (DeiT-III uses 1e-6); timm's `ls.gamma`."""
  init_values: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    gamma = self.param("gamma", with_axes(lambda k, s, d: jnp.full(s, self.init_values, d), ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    return x * gamma.astype(x.dtype)
