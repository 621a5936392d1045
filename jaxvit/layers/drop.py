"""Stochastic depth (DropPath, Huang et al. 2016, arXiv:1603.09382)."""

import flax.linen as nn
import jax
import jax.numpy as jnp


def drop_path(module: nn.Module, x, rate, *, train: bool):
  """Drops the whole residual branch `x` per example with probability `rate`, scaling survivors
  by 1 / (1 - rate). Draws from `module`'s `drop_path` rng stream; the identity at eval or when
  `rate` is 0. `rate` may be traced (a per-layer value scanned over the block stack)."""
  if not train or (isinstance(rate, (int, float)) and rate == 0.0):
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("drop_path"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))
