"""Overlapping patch embedding (PVTv2, Wang et al. 2021, arXiv:2106.13797, sec. 3.1): a strided convolution
whose kernel is larger than its stride (7 x 7 / 4 on the image, 3 x 3 / 2 between stages), then LayerNorm."""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.init import layer_norm, with_axes, zeros

he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class OverlapPatchEmbed(nn.Module):
  """`[B, H, W, C] -> [B, ceil(H / stride), ceil(W / stride), embed_dim]`: conv `patch_size`, `stride`, padding
  `patch_size // 2` with bias (`proj`), then LayerNorm (`norm`, torch's eps 1e-5); timm's `OverlapPatchEmbed`.

  XLA's CPU convolution is the fastest here (dense, few output positions): im2col + matmul was 1-5x slower.
  """
  embed_dim: int
  patch_size: int = 7
  stride: int = 4
  norm_eps: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.patch_size <= self.stride:
      raise ValueError(f"OverlapPatchEmbed: patch_size={self.patch_size}; accepted: > stride={self.stride}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    p = self.patch_size // 2
    x = nn.Conv(self.embed_dim, (self.patch_size,) * 2, strides=self.stride, padding=((p, p), (p, p)), name="proj",
                kernel_init=with_axes(he_normal_fan_out, (None, None, "conv_in", "embed")),
                bias_init=with_axes(zeros, ("embed",)), **kw)(x)
    return layer_norm(self.norm_eps, name="norm", **kw)(x)
