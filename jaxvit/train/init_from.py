"""Starting a run from other weights (`config.init_from`): a converted timm checkpoint or a jaxvit run.

Position embeddings are resampled to the new grid, classifier heads of another size start from
zeros (as jaxvit initialises heads), a scanned model takes loop-layout weights; anything else that
does not fit is one error naming the parameters. BatchNorm models carry their `batch_stats` along
(`load_variables`, `adapt_variables`).
"""

import os

import flax
import numpy as np

from jaxvit.convert import family_of
from jaxvit.convert.io import META_FILE, load_converted, restore_on_host
from jaxvit.convert.mapping import loop_to_scan
from jaxvit.layers import resample_abs_pos_embed


def load_variables(path: str, field: str = "config.init_from") -> dict:
  """Every collection (`params`, BatchNorm's `batch_stats`, ...) from `python -m jaxvit.convert --out DIR`
  or from a training `--workdir`'s newest checkpoint (its state's `params` and `mutable`)."""
  path = os.path.abspath(path)
  if os.path.exists(os.path.join(path, META_FILE)):
    return dict(load_converted(path)[1])
  ckpt_dir = os.path.join(path, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise ValueError(f"{field}={path!r} is neither a converted checkpoint (python -m jaxvit.convert) "
                     f"nor a training workdir with checkpoints")
  state = restore_on_host(os.path.join(ckpt_dir, str(steps[-1]), "state"))
  return {"params": state["params"], **(state.get("mutable") or {})}


def load_params(path: str, field: str = "config.init_from") -> dict:
  """The `params` of `load_variables(path)`."""
  return load_variables(path, field)["params"]


def adapt(source: dict, target: dict, model, error_prefix: str = "config.init_from does not fit config.model"
          ) -> tuple[dict, list[str]]:
  """Fits `source` params to the `target` tree (arrays or shapes); returns `(params, notes)`."""
  src = flax.traverse_util.flatten_dict(source, sep="/")
  if getattr(model, "scan", False) and any("blocks_" in p for p in src):  # loop-layout weights, scanned model
    src = flax.traverse_util.flatten_dict(loop_to_scan(source), sep="/")
  heads = getattr(family_of(model), "HEADS", ())
  dst = flax.traverse_util.flatten_dict(target, sep="/")
  out, notes, missing, misshaped = {}, [], [], []
  for path, want in dst.items():
    if path not in src:
      missing.append(path)
      continue
    value = np.asarray(src[path])
    if value.shape == tuple(want.shape):
      out[path] = value.astype(want.dtype)
    elif path == "pos_embed":
      prefix = 0 if model.no_embed_class else model.num_prefix_tokens
      out[path] = resample_abs_pos_embed(value, model.grid, num_prefix_tokens=prefix).astype(want.dtype)
      notes.append(f"pos_embed resampled {value.shape} -> {tuple(want.shape)}")
    elif path.split("/")[0] in heads:
      out[path] = np.zeros(want.shape, want.dtype)
      notes.append(f"{path} replaced {value.shape} -> {tuple(want.shape)} (zeros)")
    else:
      misshaped.append(f"{path} {value.shape} -> {tuple(want.shape)}")
  unexpected = sorted(set(src) - set(dst))
  if missing or misshaped or unexpected:
    raise ValueError(f"{error_prefix}: " + "; ".join(
        f"{title}: {', '.join(items[:10])}" for title, items in
        (("missing", missing), ("mis-shaped", misshaped), ("unexpected", unexpected)) if items))
  return flax.traverse_util.unflatten_dict(out, sep="/"), notes


def adapt_variables(source: dict, target: dict, model,
                    error_prefix: str = "config.init_from does not fit config.model") -> tuple[dict, list[str]]:
  """`adapt` for every collection of `target` (`params`, `batch_stats`, ...); returns `(variables, notes)`.

  A classifier head replaced in `params` has no running statistics, so the other collections fit as
  they are. A collection the model has and `source` lacks is an error naming it.
  """
  missing = sorted(set(target) - set(source))
  if missing:
    raise ValueError(f"{error_prefix}: the checkpoint has no {', '.join(missing)} "
                     f"(it holds {', '.join(sorted(source))})")
  variables, notes = {}, []
  for collection, tree in target.items():
    variables[collection], more = adapt(source[collection], tree, model,
                                        f"{error_prefix} ({collection})" if collection != "params" else error_prefix)
    notes += more
  return variables, notes
