"""timm (PyTorch) weights -> jaxvit variables (`params`, and BatchNorm's `batch_stats`).

`from_timm(torch_module)` converts a live timm model; `convert_state_dict(name, state_dict)` a
checkpoint's tensors; `python -m jaxvit.convert` a checkpoint file into an orbax checkpoint.
The model family `jaxvit/models/<family>.py` converts through `jaxvit/convert/<family>.py`, which
supplies `timm_name`, optionally `special`, `HEADS`, `TIMM_ARGS` and `overrides_from_timm` (see
`mapping.py`).
"""

import importlib
import pkgutil

import flax
import numpy as np

from jaxvit.convert.io import load_converted, read_state_dict, save_converted
from jaxvit.convert.mapping import ConversionError, abstract_params, convert_state_dict as _convert, loop_to_scan
from jaxvit.registry import _check_name, create_model


def families() -> list[str]:
  """The model families with a timm conversion (`jaxvit/convert/<family>.py`)."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in ("io", "mapping") and
                not m.name.startswith("_"))


def family_of(model):
  """The conversion module of `model`'s family (`jaxvit.models.swin.Swin` -> `jaxvit.convert.swin`), or
  None if the family has no timm conversion."""
  family = type(model).__module__.rsplit(".", 1)[-1]
  return importlib.import_module(f"{__name__}.{family}") if family in families() else None


def _family(model):
  family = family_of(model)
  if family is None:
    raise ValueError(f"no timm conversion for {type(model).__name__}; families: {families()}")
  return family


def head_params(model) -> dict:
  """`{param path: ShapeDtypeStruct}` of the model's classifier(s) (its family's `HEADS`)."""
  flat = flax.traverse_util.flatten_dict(abstract_params(model), sep="/")
  return {path: v for path, v in flat.items() if path.split("/")[0] in _family(model).HEADS}


def head_keys(model) -> set:
  """The timm checkpoint keys of the model's classifier(s)."""
  return {_family(model).timm_name(path, model) for path in head_params(model)}


def convert_state_dict(name: str, state_dict: dict, *, reset_head: bool = False, **overrides):
  """Converts a timm `state_dict` (numpy or torch tensors) for registered model `name`.

  Returns `(model, variables)`: `{"params": ...}`, plus `batch_stats` for BatchNorm models. With
  `reset_head`, classifier weights that do not fit `num_classes` are re-initialised (zeros, as
  jaxvit initialises heads) instead of failing.
  """
  model = create_model(name, **overrides)
  family = _family(model)
  state = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}
  heads = head_params(model) if reset_head else {}
  dropped = head_keys(model) if reset_head else set()
  variables = _convert({k: v for k, v in state.items() if k not in dropped}, model, family.timm_name,
                       getattr(family, "special", None), skip=lambda path: path in heads)
  if reset_head:  # zeros, as jaxvit initialises classifier heads
    params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
    params.update({path: np.zeros(v.shape, v.dtype) for path, v in heads.items()})
    variables["params"] = flax.traverse_util.unflatten_dict(params, sep="/")
  if getattr(model, "scan", False):
    variables["params"] = loop_to_scan(variables["params"])
  return model, variables


def timm_kwargs(name: str, **fields) -> dict:
  """The jaxvit `fields` timm's constructor for registered model `name` also takes (its family's
  `TIMM_ARGS`; a CNN takes no `img_size`)."""
  family = _family(create_model(name))
  return {k: v for k, v in fields.items() if k in family.TIMM_ARGS}


def head_mismatch(name: str, state_dict: dict, **overrides) -> str | None:
  """Why the checkpoint's classifier does not fit model `name` with `overrides`, or None if it does."""
  model = create_model(name, **overrides)
  for path, target in head_params(model).items():
    key = _family(model).timm_name(path, model)
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


__all__ = ["ConversionError", "convert_state_dict", "families", "family_of", "from_timm", "head_keys", "head_mismatch", "head_params",
           "load_converted", "read_state_dict", "save_converted", "timm_kwargs"]
