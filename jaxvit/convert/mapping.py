"""Generic timm state_dict -> jaxvit variables conversion, driven by a per-family name mapping.

Every collection is filled: `params` from weights, `batch_stats` (BatchNorm's running `mean` / `var`)
from timm's `running_mean` / `running_var` buffers; `num_batches_tracked` has no counterpart. A family
supplies `timm_name(jax_path, model) -> str` and, where a tensor needs more than the
generic layout change, a `special(jax_path, tensor, target_shape, model)` hook. The generic part
transposes torch layouts to Flax ones (Linear `[out, in]` -> `[in, out]`, Conv `OIHW` -> `HWIO`),
reshapes to the target (fused / multi-axis kernels), and reports every missing, unexpected and
mis-shaped key in one error.
"""

from typing import Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.utils import input_shape

LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight", "mean": "running_mean",
              "var": "running_var"}


class ConversionError(ValueError):
  """A checkpoint whose keys or shapes do not fit the model."""


def torch_to_flax_layout(tensor: np.ndarray, target_shape) -> np.ndarray:
  """Moves a torch weight to Flax layout: `[out, in]` -> `[in, out]`, `OIHW` -> `HWIO`, then reshapes."""
  if tensor.ndim == 2 and len(target_shape) >= 2:
    tensor = tensor.T
  elif tensor.ndim == 4:
    tensor = tensor.transpose(2, 3, 1, 0)
  elif tensor.ndim == 3 and len(target_shape) == 3 and tensor.shape[::-1] == tuple(target_shape):
    tensor = tensor.transpose(2, 1, 0)  # Conv1d OIW -> WIO
  if tensor.size != int(np.prod(target_shape)):
    raise ValueError(f"{tensor.shape} cannot fill {tuple(target_shape)}")
  return tensor.reshape(target_shape)


def default_timm_name(path: str) -> str:
  """`a/b_3/c/kernel` -> `a.b.3.c.weight`: numbered submodules and torch leaf names."""
  *mods, leaf = path.split("/")
  mods = [m.replace("_", ".") if m.rsplit("_", 1)[-1].isdigit() and "_" in m else m for m in mods]
  return ".".join(mods + [LEAF_NAMES.get(leaf, leaf)])


def abstract_variables(model) -> dict:
  """The model's variables (every collection) as `ShapeDtypeStruct`s (no memory), unboxed, loop layout."""
  if getattr(model, "scan", False):
    model = model.clone(scan=False)
  images = jax.ShapeDtypeStruct(input_shape(model), jnp.float32)
  return nn.meta.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images))


def abstract_params(model) -> dict:
  """The model's param tree as `ShapeDtypeStruct`s (no memory), unboxed, in the loop layout."""
  return abstract_variables(model)["params"]


def convert_state_dict(state_dict: dict, model, timm_name: Callable, special: Optional[Callable] = None,
                       ignore: Callable = lambda key: key.endswith(".num_batches_tracked"),
                       skip: Callable = lambda path: False) -> dict:
  """Builds `model`'s variables `{"params": ..., "batch_stats": ...}` (loop layout) from a timm
  `state_dict` of numpy arrays.

  `timm_name`, `special` and `skip` see a variable's path inside its collection
  (`layer1_0/bn1/mean`). `ignore(key)` marks checkpoint keys with no counterpart here (BatchNorm's step counter);
  `skip(path)` marks model variables the caller fills itself (a re-initialised head).
  """
  flat = flax.traverse_util.flatten_dict(abstract_variables(model), sep="/")
  variables, missing, misshaped, used = {}, [], [], set()
  for full_path, target in flat.items():
    path = full_path.split("/", 1)[1]
    if skip(path):
      continue
    key = timm_name(path, model)
    if key not in state_dict:
      missing.append(f"{key} (for {path})")
      continue
    used.add(key)
    tensor = np.asarray(state_dict[key], np.float32)
    try:
      value = special(path, tensor, target.shape, model) if special else None
      value = torch_to_flax_layout(tensor, target.shape) if value is None else value
      if value.shape != tuple(target.shape):
        raise ValueError(f"{value.shape} != {tuple(target.shape)}")
    except ValueError as err:
      misshaped.append(f"{key} {tuple(tensor.shape)} -> {path} {tuple(target.shape)}: {err}")
      continue
    variables[full_path] = value.astype(target.dtype)
  unexpected = sorted(k for k in state_dict if k not in used and not ignore(k))
  if missing or unexpected or misshaped:
    lines = [f"checkpoint does not fit {type(model).__name__}:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
      if items:
        lines.append(f"  {title} ({len(items)}): " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
    raise ConversionError("\n".join(lines))
  return flax.traverse_util.unflatten_dict(variables, sep="/")


def loop_to_scan(params: dict, prefix: str = "blocks") -> dict:
  """Stacks `{prefix}_0 ... {prefix}_{n-1}` subtrees into one `{prefix}` tree (nn.scan layout)."""
  out = {}
  numbered = sorted((k for k in params if k.startswith(prefix + "_") and k[len(prefix) + 1:].isdigit()),
                    key=lambda k: int(k[len(prefix) + 1:]))
  for key, value in params.items():
    if key in numbered:
      continue
    out[key] = loop_to_scan(value, prefix) if isinstance(value, dict) else value
  if numbered:
    out[prefix] = jax.tree.map(lambda *xs: np.stack(xs), *[params[k] for k in numbered])
  return out
