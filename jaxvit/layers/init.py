"""Parameter initialisers with logical axis names (DESIGN.md: `embed`, `mlp`, `heads`, `kv`, ...)."""

import flax.linen as nn
import jax

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
