"""Cycle fully-connected layer (CycleMLP, Chen et al. 2022, arXiv:2107.10224, sec. 3.1, eq. 4 "Cycle FC").

Channel i of the input is read at a spatial offset that cycles with i along one axis, `(i + k // 2) mod k - k // 2`
for a `1 x k` (or `k x 1`) pseudo-kernel (0, 1, -1, 0, 1, -1, ... for k = 3), then a channel FC mixes the channels.
The official code runs it as torchvision's `deform_conv2d` with these fixed integer offsets and a 1x1 kernel;
bilinear sampling at integer positions is a plain read, and out-of-image reads are zero, so here it is a zero-filled
per-channel shift (`shift_channels`) followed by a matmul: no deformable convolution.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import trunc_normal_02, with_axes, zeros


def shift_channels(x, offsets, axis: int):
  """`out[..., p, ..., c] = x[..., p + offsets[c], ..., c]` along spatial `axis`, zero where that leaves the map.

  `offsets` is a static integer sequence, one per channel (the last axis of `x`)."""
  offsets = np.asarray(offsets, dtype=np.int64)
  if offsets.shape != (x.shape[-1],):
    raise ValueError(f"shift_channels: {len(offsets)} offsets for {x.shape[-1]} channels")
  pad = int(np.abs(offsets).max(initial=0))
  if pad == 0:
    return x
  n = x.shape[axis]
  widths = [(0, 0)] * x.ndim
  widths[axis] = (pad, pad)
  padded = jnp.pad(x, widths)
  out = jnp.zeros_like(x)
  for d in np.unique(offsets):
    window = jax.lax.slice_in_dim(padded, pad + int(d), pad + int(d) + n, axis=axis)
    out = jnp.where(jnp.asarray(offsets == d), window, out)  # the channels that read offset d
  return out


def cycle_offsets(channels: int, kernel: int):
  """The official `CycleFC.gen_offset` offsets along the kernel's long axis: `(i + k // 2) mod k - k // 2`."""
  return [(i + kernel // 2) % kernel - kernel // 2 for i in range(channels)]


class CycleFC(nn.Module):
  """Cycle FC: `kernel_size` `(1, k)` shifts channels along the width, `(k, 1)` along the height (the official
  offsets' (dy, dx) order), then `x @ kernel + bias` (`kernel` `[C_in, C_out]`, the official 1x1 `weight`)."""
  features: int
  kernel_size: tuple = (1, 3)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    kh, kw = self.kernel_size
    if min(kh, kw) != 1:
      raise ValueError(f"CycleFC: kernel_size={self.kernel_size!r}; accepted: (1, k) or (k, 1), k >= 1")
    axis, k = (2, kw) if kh == 1 else (1, kh)
    x = shift_channels(x.astype(self.dtype), cycle_offsets(x.shape[-1], k), axis)
    kernel = self.param("kernel", with_axes(trunc_normal_02, ("embed", "mlp")), (x.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", with_axes(zeros, ("mlp",)), (self.features,), self.param_dtype)
    return jnp.dot(x, kernel.astype(self.dtype)) + bias.astype(self.dtype)
