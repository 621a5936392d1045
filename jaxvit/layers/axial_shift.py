"""Axial shift (AS-MLP, Lian et al. 2022, arXiv:2107.08391, sec. 3.2, fig. 2 / eq. 3-4).

The channels are split into `shift_size` consecutive groups of `ceil(C / shift_size)` (the last may be smaller);
group g moves by `g - shift_size // 2` pixels along one axis, zero-filled, so a following channel FC sees a
`shift_size`-wide axial neighbourhood. `AxialShift` is the official token mixer: conv1 -> GroupNorm -> GELU,
a horizontal and a vertical shift each through its own channel FC + GELU, their sum -> GroupNorm -> conv3 (all
1x1 convolutions, here dense layers on NHWC maps).
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.cycle_fc import shift_channels
from jaxvit.layers.init import dense, ones, with_axes, zeros
from jaxvit.layers.mlp import gelu


def axial_offsets(channels: int, shift_size: int):
  """Per-channel read offsets of the official `Shift` kernel: channel c reads `p - (c // ceil(C / s) - s // 2)`."""
  group = math.ceil(channels / shift_size)
  return [shift_size // 2 - c // group for c in range(channels)]


def axial_shift(x, shift_size: int, axis: int):
  """Shifts channel group g of `x` `[B, H, W, C]` by `g - shift_size // 2` pixels along `axis`, zero-filled."""
  return shift_channels(x, axial_offsets(x.shape[-1], shift_size), axis)


def group_norm(*, dtype=None, param_dtype=None, name=None):
  """The official `MyNorm`: torch's `GroupNorm(1, C)` (eps 1e-5), over each image's (H, W, C)."""
  return nn.GroupNorm(num_groups=1, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name,
                      scale_init=with_axes(ones, ("embed",)), bias_init=with_axes(zeros, ("embed",)))


class AxialShift(nn.Module):
  """The official `AxialShift` (`conv1`, `norm1`, `conv2_1` (width shift), `conv2_2` (height shift), `norm2`,
  `conv3`); `shift_size` odd >= 1."""
  shift_size: int = 5
  as_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x.shape[-1]
    fc = lambda name: dense(c, ("embed", "embed"), use_bias=self.as_bias, name=name, **kw)  # noqa: E731
    x = gelu(group_norm(name="norm1", **kw)(fc("conv1")(x)))
    x_lr = gelu(fc("conv2_1")(axial_shift(x, self.shift_size, 2)))
    x_td = gelu(fc("conv2_2")(axial_shift(x, self.shift_size, 1)))
    return fc("conv3")(group_norm(name="norm2", **kw)(x_lr + x_td))
