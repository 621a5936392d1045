"""Small helpers shared across jaxvit: initialising a model and counting its parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def input_shape(model, batch: int = 1) -> tuple[int, ...]:
  """The NHWC input shape a model was built for (`img_size`, 3 channels)."""
  size = model.img_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return (batch, h, w, getattr(model, "in_chans", 3))


def init_variables(model, rng=0, batch: int = 1):
  """`model.init` on a zero batch of the model's input shape; returns plain (unboxed) variables."""
  rng = jax.random.key(rng) if isinstance(rng, int) else rng
  images = jnp.zeros(input_shape(model, batch), jnp.float32)
  return nn.meta.unbox(jax.jit(lambda r: model.init({"params": r}, images, train=False))(rng))


def count_params(model_or_params) -> int:
  """Number of parameters of a model (via `jax.eval_shape`, no memory used) or of a params tree."""
  tree = model_or_params
  if isinstance(model_or_params, nn.Module):
    images = jax.ShapeDtypeStruct(input_shape(model_or_params), jnp.float32)
    tree = jax.eval_shape(lambda x: model_or_params.init(jax.random.key(0), x, train=False), images)["params"]
  tree = nn.meta.unbox(tree)
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def config_error(module, field: str, value, accepted) -> ValueError:
  """The one error a model's `validate()` raises: names the field, its value and what is accepted."""
  return ValueError(f"{type(module).__name__}: {field}={value!r}; accepted: {accepted}")


def check_stages(module, fields) -> int:
  """Raises `config_error` unless the module's `depths` are stage depths >= 1 and each of its per-stage `fields` has
  one value per stage; returns the number of stages."""
  n = len(module.depths)
  if n < 1 or min(module.depths) < 1:
    raise config_error(module, "depths", module.depths, "stage depths >= 1")
  for field in fields:
    if len(getattr(module, field)) != n:
      raise config_error(module, field, getattr(module, field), f"{n} values, one per stage (len(depths))")
  return n


def check_rates(module, fields):
  """Raises `config_error` for any of the module's rate `fields` (dropout, drop path) outside [0, 1)."""
  for field in fields:
    if not 0.0 <= getattr(module, field) < 1.0:
      raise config_error(module, field, getattr(module, field), "[0, 1)")
