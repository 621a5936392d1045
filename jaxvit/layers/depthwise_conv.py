"""Depthwise convolution (MobileNets, Howard et al. 2017, arXiv:1704.04861) as k x k shifted multiply-adds.

XLA's CPU convolution with `feature_group_count = C` is 20-70x slower than the same sum written as one
fused loop of k^2 shifted slices times per-channel weights (measured on 3x3 kernels at 56x56x48 and 14x14x168,
batch 32, forward and backward). Each tap is an `einsum` with no contracted axis, which XLA turns into a
plain multiply, so `jaxvit.bench.count_macs` sees the k^2 multiply-adds per output element that fvcore counts
for torch's depthwise `Conv2d`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import trunc_normal_02, with_axes, zeros


def _shifted_sum(x, kernel, counted: bool):
  """sum over taps (i, j) of x shifted by (i, j) times kernel[i, j]; `counted` writes each product as an einsum."""
  k = kernel.shape[0]
  h, w = x.shape[1:3]
  pad = k // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = None
  for i in range(k):
    for j in range(k):
      window = padded[:, i:i + h, j:j + w]
      tap = jnp.einsum("bhwc,c->bhwc", window, kernel[i, j]) if counted else window * kernel[i, j]
      out = tap if out is None else out + tap
  return out


@jax.custom_vjp
def depthwise_conv2d(x, kernel):
  """`[B, H, W, C]` * `[k, k, C]` -> `[B, H, W, C]`, stride 1, zero padding `k // 2` (odd `k`): torch's
  `Conv2d(C, C, k, padding=k // 2, groups=C)` without bias.

  The backward pass is written out with plain products (autodiff through the einsums compiles to batched
  matmuls for the kernel's gradient, 25% slower on a SwiftFormer-XS training step); forward-mode autodiff
  (`jax.jvp`) is not defined.
  """
  return _shifted_sum(x, kernel, counted=True)


def _forward(x, kernel):
  return _shifted_sum(x, kernel, counted=True), (x, kernel)


def _backward(residuals, grad):
  x, kernel = residuals
  k = kernel.shape[0]
  h, w = x.shape[1:3]
  pad = k // 2
  grad_x = _shifted_sum(grad, kernel[::-1, ::-1], counted=False)  # the transposed (flipped) correlation
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  grad_kernel = jnp.stack([jnp.stack([jnp.sum(padded[:, i:i + h, j:j + w] * grad, axis=(0, 1, 2))
                                      for j in range(k)]) for i in range(k)])
  return grad_x, grad_kernel.astype(kernel.dtype)


depthwise_conv2d.defvjp(_forward, _backward)


class DepthwiseConv(nn.Module):
  """A `kernel_size` x `kernel_size` depthwise convolution with bias; kernel `[k, k, 1, C]` (Flax's HWIO layout of
  a grouped conv, so torch's `[C, 1, k, k]` converts by the generic transpose), bias `[C]`."""
  kernel_size: int = 3
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", with_axes(trunc_normal_02, (None, None, None, "conv_out")), (k, k, 1, c),
                        self.param_dtype)
    y = depthwise_conv2d(x.astype(self.dtype), kernel[:, :, 0].astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", with_axes(zeros, ("conv_out",)), (c,), self.param_dtype).astype(self.dtype)
    return y
