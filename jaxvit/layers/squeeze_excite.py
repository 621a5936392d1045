"""Squeeze-and-Excitation (Hu et al. 2018, arXiv:1709.01507, sec. 3, eqs. 2-4)."""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.init import dense


class SqueezeExcite(nn.Module):
  """`x * sigmoid(W2 relu(W1 z))` with `z` the spatial mean of `x` ("squeeze", eq. 2) and the
  gate its "excitation" (eq. 3), rescaling channels (eq. 4). timm's `SEModule`: its 1x1 convs
  `fc1` (C -> `rd_channels`) and `fc2` (back to C), with biases, are dense layers on `z` here.
  """
  rd_channels: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    z = jnp.mean(x, axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    z = nn.relu(dense(self.rd_channels, ("conv_in", "conv_out"), name="fc1", **kw)(z))
    z = dense(x.shape[-1], ("conv_in", "conv_out"), name="fc2", **kw)(z)
    return x * nn.sigmoid(z)
