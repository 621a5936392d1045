"""Parameter initialisers with logical axis names (DESIGN.md: `embed`, `mlp`, `heads`, `kv`, ...)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

trunc_normal_02 = jax.nn.initializers.truncated_normal(0.02)
zeros = jax.nn.initializers.zeros
ones = jax.nn.initializers.ones


def with_axes(init, axes):
  """`init` whose parameter carries logical axis names, so config rules can shard it."""
  return nn.with_logical_partitioning(init, tuple(axes))


def dense(features, axes, *, use_bias=True, dtype=None, param_dtype=None, kernel_init=trunc_normal_02,
          name=None):
  """A `nn.Dense` whose kernel is named `axes = (in_axis, out_axis)` and bias `(out_axis,)`."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=with_axes(kernel_init, axes), bias_init=with_axes(zeros, axes[1:]))


def layer_norm(eps=1e-6, *, dtype=None, param_dtype=None, name=None):
  """LayerNorm over the last (`embed`) axis; timm's ViTs use eps 1e-6."""
  return nn.LayerNorm(
      epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=with_axes(ones, ("embed",)), bias_init=with_axes(zeros, ("embed",)))


class Projection(nn.Module):
  """A linear map contracting input `axis` into `features` (possibly several output axes).

  Like `nn.DenseGeneral`, but the kernel is created at its true shape `[*contracted, *features]`,
  so its logical axis names (`kernel_axes`) hold inside a mesh. Attention's fused `qkv`
  (`[embed, 3, heads, head_dim]`) and its head-merging `proj` (`[heads, head_dim, embed]`) use it.
  """
  features: tuple
  kernel_axes: tuple
  axis: tuple = (-1,)
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    axis = tuple(a % x.ndim for a in self.axis)
    shape = tuple(x.shape[a] for a in axis) + tuple(self.features)
    kernel = self.param("kernel", with_axes(trunc_normal_02, self.kernel_axes), shape, self.param_dtype)
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                            ((axis, tuple(range(len(axis)))), ((), ())))
    if self.use_bias:
      bias = self.param("bias", with_axes(zeros, self.kernel_axes[len(axis):]), tuple(self.features),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
