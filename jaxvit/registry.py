"""Model registry: `register_model`, `create_model(name, **overrides)`, `list_models(pattern)`.

Names follow timm's where timm has the model, so `create_model("deit_small_patch16_224")` is the
model users know. A registered entry is a function returning a linen Module; overrides are the
Module's own dataclass fields (`num_classes`, `img_size`, `dtype`, `drop_path_rate`, ...).
"""

import dataclasses
import difflib
import fnmatch
from typing import Callable

import flax.linen as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_PRETRAINED_CFGS: dict[str, dict] = {}

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)


def register_model(fn=None, *, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=0.875):
  """Registers `fn(**overrides) -> Module` under `fn.__name__`, with its input normalisation."""

  def wrap(fn):
    name = fn.__name__
    if name in _MODELS:
      raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    _PRETRAINED_CFGS[name] = dict(mean=tuple(mean), std=tuple(std), crop_pct=crop_pct)
    return fn

  return wrap(fn) if fn is not None else wrap


def register_variant(cls, name: str, *, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=0.875,
                     **fields):
  """Registers `name` as `cls(**fields)`, with its input normalisation and eval crop."""
  fn = lambda: cls(**fields)
  fn.__name__ = name
  fn.__doc__ = f"{name}: {fields}"
  register_model(fn, mean=mean, std=std, crop_pct=crop_pct)


def model_family(name: str) -> str:
  """The family (`jaxvit/models/<family>.py`) that defines registered model `name`."""
  _check_name(name)
  return type(_MODELS[name]()).__module__.rsplit(".", 1)[-1]


def list_families() -> list[str]:
  return sorted({model_family(n) for n in _MODELS})


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
  """Sorted names matching a shell-style `pattern` (`"deit*"`, `"*distilled*"`), optionally of one `family`
  (`"swin"`; a prefix of the family's name followed by `_` also matches: `"pvt"` selects `pvt_v2`)."""
  if family is not None and not any(f == family or f.startswith(family + "_") for f in list_families()):
    raise ValueError(f"unknown model family {family!r}; families: {list_families()}")
  return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern) and
                (family is None or model_family(n) == family or model_family(n).startswith(family + "_")))


def is_model(name: str) -> bool:
  return name in _MODELS


def _check_name(name: str):
  if name not in _MODELS:
    close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}{hint} (see jaxvit.list_models())")


def create_model(name: str, **overrides) -> nn.Module:
  """Builds the registered model `name`, with dataclass-field overrides.

  >>> model = create_model("deit_small_patch16_224", num_classes=10, img_size=32)
  """
  _check_name(name)
  module = _MODELS[name]()
  fields = {f.name for f in dataclasses.fields(module) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"{name}: unknown override(s) {unknown}; accepted: {sorted(fields)}")
  module = module.clone(**overrides)
  validate = getattr(module, "validate", None)
  if validate is not None:
    validate()
  return module


def pretrained_cfg(name: str) -> dict:
  """Input normalisation (`mean`, `std`) and eval `crop_pct` of a registered model."""
  _check_name(name)
  return dict(_PRETRAINED_CFGS[name])
