"""Conditional position encoding: CPVT's position encoding generator (PEG, Chu et al. 2021, arXiv:2102.10882,
sec. 3.2 / eq. 3), as Twins (arXiv:2104.13840) uses it after each stage's first block."""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.depthwise_conv import DepthwiseConv


class PosConv(nn.Module):
  """PEG: `x + DWConv3x3(x)` on a token map `[B, H, W, C]`; the positions come from zero padding at the borders.

  timm's `PosConv` (`proj` = `Sequential(Conv2d(C, C, 3, 1, 1, groups=C))`, stride 1).
  """
  kernel_size: int = 3
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return x + DepthwiseConv(self.kernel_size, dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(x)
