"""Reading timm checkpoint files and writing / reading converted orbax checkpoints."""

import json
import os

import flax.linen as nn
import numpy as np
import orbax.checkpoint as ocp

META_FILE = "jaxvit_model.json"


def read_state_dict(path: str) -> dict:
  """Tensors of a timm checkpoint file as numpy arrays.

  `.safetensors` is read without torch; `.pth` / `.pt` / `.bin` with `torch.load(weights_only=True)`,
  which refuses to unpickle arbitrary objects. A `{"model": ...}` / `{"state_dict": ...}` wrapper
  (DeiT's and timm's training checkpoints) is unwrapped.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return load_file(path)
  if not path.endswith((".pth", ".pt", ".bin")):
    raise ValueError(f"checkpoint {path!r}: accepted formats are .safetensors, .pth, .pt, .bin")
  import torch
  state = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("model", "state_dict", "model_ema"):
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
      break
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()
          if hasattr(v, "numpy")}


def save_converted(out_dir: str, variables: dict, model_name: str, overrides: dict, **meta):
  """Writes `variables` (boxed with logical axes or not) as an orbax checkpoint in `out_dir/variables`
  and the model recipe as JSON."""
  variables = nn.meta.unbox(variables)
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(out_dir, "variables"), variables, force=True)
  checkpointer.wait_until_finished()
  with open(os.path.join(out_dir, META_FILE), "w") as f:
    json.dump(dict(model=model_name, overrides=overrides, **meta), f, indent=2, default=str)


def restore_on_host(path: str):
  """An orbax checkpoint item as numpy arrays, whatever devices and processes wrote it (a plain
  `restore` insists on the writer's topology: a teacher saved by an 8-device run would not load into
  two processes)."""
  import jax
  tree = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def load_converted(out_dir: str):
  """`(model, variables)` from a directory written by `save_converted` (`config.init_from`)."""
  from jaxvit.registry import create_model
  out_dir = os.path.abspath(out_dir)
  meta_path = os.path.join(out_dir, META_FILE)
  if not os.path.exists(meta_path):
    raise FileNotFoundError(f"{out_dir} holds no converted checkpoint ({META_FILE} is missing)")
  with open(meta_path) as f:
    meta = json.load(f)
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["overrides"].items()}
  model = create_model(meta["model"], **overrides)
  return model, restore_on_host(os.path.join(out_dir, "variables"))
