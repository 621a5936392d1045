"""CvT's convolutional token embedding (Wu et al. 2021, arXiv:2103.15808, sec. 3.1).

An overlapping strided convolution (kernel > stride, with bias) maps the image or the previous stage's token map
to a smaller grid of wider tokens, then a LayerNorm normalises each token; the official `ConvEmbed` (`proj`, `norm`).
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.init import layer_norm, trunc_normal_02, with_axes, zeros


class ConvEmbed(nn.Module):
  """`[B, H, W, C_in]` -> `[B, H', W', embed_dim]`, H' = (H + 2 padding - patch_size) // stride + 1."""
  embed_dim: int
  patch_size: int = 7
  stride: int = 4
  padding: int = 2
  norm_eps: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    p = self.padding
    x = nn.Conv(self.embed_dim, (self.patch_size, self.patch_size), strides=self.stride, padding=((p, p), (p, p)),
                name="proj", kernel_init=with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")),
                bias_init=with_axes(zeros, ("conv_out",)), **kw)(x)
    return layer_norm(self.norm_eps, name="norm", **kw)(x)
