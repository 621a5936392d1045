"""Logit parity with timm (PyTorch) on random weights, float32, eval mode: |diff| <= 1e-4 x max(1, |logit|).

The model list comes from the registry: every registered model timm also has. The default run
checks one model per distinct code path (family x non-size fields) plus override paths (other
resolution, GAP, registers, another class count, scan layout); `-m parity_all` checks them all.
Weights and BatchNorm running statistics are moved off their init, so every path counts. CNNs take
any input size: the default run checks them on 64 px images (2x2 after the last stage), `parity_all`
at their reference resolution. `FLOAT64` models are compared in float64 on both sides (same tolerance).
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.utils import input_shape
from convert.timm_reference import perturbed, timm_logits
from zoo import is_cnn, representatives

HAS_TIMM = importlib.util.find_spec("timm") is not None
CNN_SIZE = 64  # default-run input size of models without patches
TIMM_MODELS = [n for n in jaxvit.list_models() if HAS_TIMM and __import__("timm").is_model(n)]
# On the perturbed random weights these deep MaxViTs amplify rounding (activations grow ~1.6x per block in their
# depth-14 stages): timm's own float32 logits differ from its float64 ones by up to 0.93 (maxvit_base_tf_224), so
# float32 cannot be compared to 1e-4 and they are compared in float64 (jaxvit and timm agree there to ~1e-6).
FLOAT64 = {f"maxvit_{size}_tf_{res}" for size in ("base", "large", "xlarge") for res in (224, 384, 512)} | {
    "maxvit_rmlp_base_rw_224", "maxvit_rmlp_base_rw_384", "maxvit_tiny_pm_256"}


def check_parity(name, timm_kwargs=None, size=None, **overrides):
  """Logits of jaxvit and timm `name` (timm built with `timm_kwargs`, jaxvit with `overrides`) agree;
  `size`: the input size for a CNN (default: its reference resolution)."""
  from jaxvit.convert import from_timm
  reference = perturbed(name, **(timm_kwargs or {}))
  model, variables = from_timm(reference, **overrides)
  _, h, w, c = input_shape(model.clone(img_size=size) if size else model, 2)
  images = np.random.RandomState(0).standard_normal((2, h, w, c)).astype(np.float32)
  if name not in FLOAT64:
    expected = timm_logits(reference, images)
    logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  else:  # the same float32 weights and images, computed in float64 on both sides
    with jax.enable_x64(True):
      expected = timm_logits(reference.double(), images.astype(np.float64))
      model = model.clone(dtype=jnp.float64, param_dtype=jnp.float64)
      variables = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
      logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images.astype(np.float64))
      logits = np.asarray(logits)
  diff = np.abs(np.asarray(logits) - expected).max()
  assert diff <= 1e-4 * max(1.0, np.abs(expected).max()), f"{name}: max abs logit diff {diff:.3g}"


@pytest.mark.parity
@pytest.mark.parametrize("name", representatives(TIMM_MODELS) if HAS_TIMM else [])
def test_logits_match_timm(name):
  check_parity(name, size=CNN_SIZE if is_cnn(jaxvit.create_model(name)) else None)


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


@pytest.mark.parity
def test_cnn_odd_size_and_classes_match_timm():
  """Odd feature maps (ResNet-D's ceil-mode average-pool shortcut) and another class count."""
  check_parity("resnet18d", dict(num_classes=10), size=65)
