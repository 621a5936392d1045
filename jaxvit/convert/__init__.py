"""timm (PyTorch) weights -> jaxvit params.

`from_timm(torch_module)` converts a live timm model; `convert_state_dict(name, state_dict)` a
checkpoint's tensors; `python -m jaxvit.convert` a checkpoint file into an orbax checkpoint.
"""

import numpy as np

from jaxvit.convert import vit
from jaxvit.convert.io import load_converted, read_state_dict, save_converted
from jaxvit.convert.mapping import ConversionError, abstract_params, convert_state_dict as _convert, loop_to_scan
from jaxvit.registry import _check_name, create_model

# jaxvit module class -> family mapping module (timm_name, special, HEADS, overrides_from_timm)
FAMILIES = {"VisionTransformer": vit}


def _family(model):
  try:
    return FAMILIES[type(model).__name__]
  except KeyError:
    raise ValueError(f"no timm conversion for {type(model).__name__}; families: {sorted(FAMILIES)}") from None


def convert_state_dict(name: str, state_dict: dict, *, reset_head: bool = False, **overrides):
  """Converts a timm `state_dict` (numpy or torch tensors) for registered model `name`.

  Returns `(model, variables)`. With `reset_head`, classifier weights that do not fit
  `num_classes` are re-initialised (zeros, as jaxvit initialises heads) instead of failing.
  """
  model = create_model(name, **overrides)
  family = _family(model)
  state = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}
  heads = tuple(family.HEADS) if reset_head else ()
  params = _convert({k: v for k, v in state.items() if not k.startswith(tuple(h + "." for h in heads))},
                    model, family.timm_name, family.special, skip=lambda path: path.split("/")[0] in heads)
  if reset_head:
    abstract = abstract_params(model)
    for head in heads:
      if head in abstract:  # zeros, as jaxvit initialises classifier heads
        params[head] = {k: np.zeros(v.shape, v.dtype) for k, v in abstract[head].items()}
  if getattr(model, "scan", False):
    params = loop_to_scan(params)
  return model, {"params": params}


def head_mismatch(name: str, state_dict: dict, **overrides) -> str | None:
  """Why the checkpoint's classifier does not fit model `name` with `overrides`, or None if it does."""
  model = create_model(name, **overrides)
  family = _family(model)
  abstract = abstract_params(model)
  for head in family.HEADS:
    for leaf, target in abstract.get(head, {}).items():
      key = family.timm_name(f"{head}/{leaf}", model)
      if key in state_dict and np.size(state_dict[key]) != np.prod(target.shape):
        return f"checkpoint {key} has shape {tuple(np.shape(state_dict[key]))}, the model needs {target.shape}"
  return None


def from_timm(torch_module, **overrides):
  """Builds the jaxvit model matching a timm model instance and converts its weights.

  The jaxvit model has the same registry name and the instance's `num_classes`, `img_size` (and
  any other overrides the family reads off the instance). Returns `(model, variables)`.
  """
  name = getattr(torch_module, "pretrained_cfg", {}).get("architecture")
  if name is None:
    raise ValueError("from_timm needs a model made by timm.create_model (it has no pretrained_cfg)")
  _check_name(name)
  family = _family(create_model(name))
  kw = family.overrides_from_timm(torch_module) | overrides
  return convert_state_dict(name, torch_module.state_dict(), **kw)


__all__ = ["ConversionError", "convert_state_dict", "from_timm", "head_mismatch", "load_converted", "read_state_dict",
           "save_converted"]
