"""Linear patch embedding (ViT, Dosovitskiy et al. 2020, arXiv:2010.11929, eq. 1: x_p E)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import with_axes, zeros


class PatchEmbed(nn.Module):
  """Cuts an NHWC image into non-overlapping `patch_size` patches and projects each to `embed_dim`.

  Equal to timm's stride-`p` `Conv2d` (`proj`; kernel kept in HWIO `[p, p, C, D]`), computed as a
  reshape plus one matmul, which XLA runs faster on CPU than a strided convolution.
  Returns tokens `[B, h * w, D]` in row-major grid order.
  """
  embed_dim: int
  patch_size: int = 16
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hh, ww, c = x.shape
    p = self.patch_size
    if hh % p or ww % p:
      raise ValueError(f"image size {hh}x{ww} is not divisible by patch_size={p}")
    h, w = hh // p, ww // p
    kernel = self.param("kernel", with_axes(jax.nn.initializers.lecun_normal(in_axis=(0, 1, 2)),
                                            (None, None, "conv_in", "embed")),
                        (p, p, c, self.embed_dim), self.param_dtype)
    patches = x.reshape(b, h, p, w, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * w, p * p * c)
    y = jnp.dot(patches.astype(self.dtype), kernel.reshape(p * p * c, -1).astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", with_axes(zeros, ("embed",)), (self.embed_dim,), self.param_dtype)
    return y.astype(self.dtype)
