"""Deformable convolution (DCNv1: Dai et al. 2017, "Deformable Convolutional Networks", arXiv:1703.06211, sec. 2.1,
eq. 2) as bilinear sampling plus one matmul, static shapes; the `DeformConv2dPack` of LITv2's
`classification/mm_modules/DCN` (one deformable group, offsets from a zero-initialised conv `conv_offset` with the
same kernel, stride and padding) is the module followed.

y(p0) = sum_k w_k x(p0 + p_k + dp_k): each of the `k x k` taps reads the input at its regular grid position moved
by a learned fractional offset `dp_k = (dy, dx)` (offset channels `2 k + 0` / `2 k + 1`, taps row-major, as DCN and
torchvision), bilinearly interpolated with zeros outside the map. The samples are gathered with `take_along_axis`
(the four corners of every tap), weighted, and contracted with the kernel in one `einsum`, which
`jaxvit.bench.count_macs` counts like a convolution (`k^2 C_in` per output element). With zero offsets it is the
plain convolution.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.init import trunc_normal_02, with_axes, zeros


def bilinear_gather(x, y, xx):
  """`x` `[B, H, W, C]` sampled at fractional rows `y` / columns `xx` (`[B, M]`) -> `[B, M, C]`; corners outside the
  map count as zeros (DCN's `dmcn_im2col_bilinear`)."""
  b, h, w, c = x.shape
  flat = x.reshape(b, h * w, c)
  y0, x0 = jnp.floor(y), jnp.floor(xx)
  out = 0.0
  for dy in (0, 1):
    for dx in (0, 1):
      yi, xi = y0 + dy, x0 + dx
      weight = (1 - jnp.abs(y - yi)) * (1 - jnp.abs(xx - xi))
      valid = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
      index = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
      corner = jnp.take_along_axis(flat, index[..., None], axis=1)  # [B, M, C]
      out = out + corner * jnp.where(valid, weight, 0).astype(x.dtype)[..., None]
  return out


class DeformConv2d(nn.Module):
  """A `kernel_size` x `kernel_size` deformable conv with stride / padding, on `[B, H, W, C]` -> `[B, Ho, Wo, F]`.

  Parameters as the official `DeformConv2dPack`: `kernel` (HWIO `[k, k, C, F]`, torch's `weight` transposed),
  `bias`, and the submodule `conv_offset` (a plain conv to `2 k^2` offsets, zero-initialised).
  """
  features: int
  kernel_size: int = 2
  stride: int = 2
  padding: int = 0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s, p = self.kernel_size, self.stride, self.padding
    b, h, w, c = x.shape
    kernel = self.param("kernel", with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")),
                        (k, k, c, self.features), self.param_dtype)
    bias = self.param("bias", with_axes(zeros, ("conv_out",)), (self.features,), self.param_dtype)
    x = x.astype(self.dtype)
    offset = nn.Conv(2 * k * k, (k, k), strides=s, padding=((p, p), (p, p)), kernel_init=zeros, name="conv_offset",
                     dtype=self.dtype, param_dtype=self.param_dtype)(x)  # [B, Ho, Wo, 2 k^2]
    ho, wo = offset.shape[1:3]
    offset = offset.reshape(b, ho, wo, k * k, 2).astype(jnp.float32)
    taps = jnp.arange(k * k)
    rows = (jnp.arange(ho) * s - p)[:, None, None] + (taps // k)[None, None, :]  # [Ho, 1, k^2]
    cols = (jnp.arange(wo) * s - p)[None, :, None] + (taps % k)[None, None, :]  # [1, Wo, k^2]
    y = (rows + offset[..., 0]).reshape(b, -1)
    xx = (cols + offset[..., 1]).reshape(b, -1)
    sampled = bilinear_gather(x, y, xx).reshape(b, ho, wo, k * k, c)
    out = jnp.einsum("bhwkc,kcf->bhwf", sampled, kernel.reshape(k * k, c, -1).astype(self.dtype))
    return out + bias.astype(self.dtype)
