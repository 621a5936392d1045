"""The reference every dynamic method's oracle was computed on: timm's DeiT-S, seeded and perturbed as
in the parity tests, converted to jaxvit, and the parity tests' two images."""

import importlib.util

import numpy as np
import pytest

HAS_TIMM = importlib.util.find_spec("timm") is not None


@pytest.fixture(scope="module")
def seeded_deit_small():
  """`(model, variables, images, state_dict)`: jaxvit's conversion of timm's `deit_small_patch16_224` after
  torch.manual_seed(0) with every weight moved by 0.02 N(0, 1), the two oracle images, and timm's weights."""
  if not HAS_TIMM:
    pytest.skip("needs timm")
  import timm
  import torch
  from jaxvit.convert import from_timm
  torch.manual_seed(0)
  reference = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
  with torch.no_grad():
    for p in reference.parameters():
      p.add_(0.02 * torch.randn_like(p))
  model, variables = from_timm(reference)
  images = np.random.RandomState(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
  return model, variables, images, {k: v.numpy() for k, v in reference.state_dict().items()}

