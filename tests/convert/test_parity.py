"""Logit parity with timm (PyTorch) on random weights, float32, eval mode: |diff| <= 1e-4 x max(1, |logit|).

The model list comes from the registry: every registered model timm also has. The default run
checks one model per distinct code path (family x non-size fields) plus override paths (other
resolution, GAP, registers, another class count, scan layout); `-m parity_all` checks them all.
"""

import dataclasses
import importlib.util

import jax
import numpy as np
import pytest

import jaxvit

HAS_TIMM = importlib.util.find_spec("timm") is not None
SIZE_FIELDS = {"embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes"}
TIMM_MODELS = [n for n in jaxvit.list_models() if HAS_TIMM and __import__("timm").is_model(n)]


def code_path(name):
  model = jaxvit.create_model(name)
  return type(model).__name__, tuple((f.name, getattr(model, f.name)) for f in dataclasses.fields(model)
                                     if f.init and f.name not in SIZE_FIELDS | {"parent", "name"})


def representatives(names):
  """The smallest model (by parameter count) of each code path."""
  groups = {}
  for name in names:
    groups.setdefault(code_path(name), []).append(name)
  return sorted(min(g, key=lambda n: jaxvit.count_params(jaxvit.create_model(n))) for g in groups.values())


def check_parity(name, timm_kwargs=None, **overrides):
  import timm
  import torch
  from jaxvit.convert import from_timm
  torch.manual_seed(0)
  reference = timm.create_model(name, pretrained=False, **(timm_kwargs or {})).eval()
  with torch.no_grad():  # move every weight off its init (zero heads, 1e-6 LayerScale) so all paths count
    for p in reference.parameters():
      p.add_(0.02 * torch.randn_like(p))
  model, variables = from_timm(reference, **overrides)
  h, w = reference.patch_embed.img_size
  images = np.random.RandomState(0).standard_normal((2, h, w, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  diff = np.abs(np.asarray(logits) - expected).max()
  assert diff <= 1e-4 * max(1.0, np.abs(expected).max()), f"{name}: max abs logit diff {diff:.3g}"


@pytest.mark.parity
@pytest.mark.parametrize("name", representatives(TIMM_MODELS) if HAS_TIMM else [])
def test_logits_match_timm(name):
  check_parity(name)


@pytest.mark.parity
@pytest.mark.parametrize("timm_kwargs,overrides", [
    (dict(img_size=64, num_classes=10), {}),
    (dict(global_pool="avg", class_token=False), {}),
    (dict(reg_tokens=4, global_pool="avg"), {}),
    ({}, dict(scan=True)),
], ids=["other_resolution", "gap_no_class_token", "registers", "scan"])
def test_code_paths_match_timm(timm_kwargs, overrides):
  check_parity("deit_tiny_patch16_224", timm_kwargs, **overrides)


@pytest.mark.parity_all
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_all_logits_match_timm(name):
  check_parity(name)
