"""Twins (jaxvit.models.twins): locally-grouped attention against timm on a padded map and against a per-window
reference, the PEG against a grouped convolution, SVT's LSA / GSA alternation, Twins-SVT at another resolution
against timm, bfloat16 and clear config errors."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert.mapping import default_timm_name, torch_to_flax_layout
from jaxvit.layers.grouped_attention import LocallyGroupedAttention
from jaxvit.layers.peg import PosConv
from fast_jit import jit_fast
from numpy_params import random_params


def test_lsa_matches_timm_on_a_padded_map():
  """9x12 map, 7x7 windows: padded to 14x14 with zeros that are attended to, as timm's `forward_padding`."""
  pytest.importorskip("timm")
  import torch
  from timm.models.twins import LocallyGroupedAttn
  reference = LocallyGroupedAttn(32, num_heads=4, ws=7).eval()
  torch.manual_seed(0)
  with torch.no_grad():
    for p in reference.parameters():
      p.add_(0.05 * torch.randn_like(p))
  x = np.random.RandomState(1).standard_normal((2, 9, 12, 32)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.reshape(2, -1, 32)), (9, 12)).numpy().reshape(x.shape)
  layer = LocallyGroupedAttention(4, 7)
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  flat = flax.traverse_util.flatten_dict(random_params(layer, x, train=False), sep="/")
  params = flax.traverse_util.unflatten_dict(
      {p: torch_to_flax_layout(state[default_timm_name(p)], v.shape) for p, v in flat.items()}, sep="/")
  np.testing.assert_allclose(jit_fast(lambda p, x: layer.apply({"params": p}, x, train=False), params, x), expected,
                             atol=2e-5)


def test_lsa_windows_do_not_mix():
  """Changing one window's tokens changes that window's outputs only (a 14x14 map, four 7x7 windows)."""
  layer = LocallyGroupedAttention(2, 7)
  x = np.random.RandomState(0).standard_normal((1, 14, 14, 8)).astype(np.float32)
  params = random_params(layer, x, train=False)
  y = np.zeros_like(x)
  y[:, 7:, :7] = 1.0  # the bottom-left window
  a, b = jit_fast(lambda p, x, y: (layer.apply({"params": p}, x, train=False),
                                   layer.apply({"params": p}, x + y, train=False)), params, x, y)
  changed = np.abs(np.asarray(a) - np.asarray(b)).max(axis=-1)[0] > 1e-6
  expected = np.zeros((14, 14), bool)
  expected[7:, :7] = True
  np.testing.assert_array_equal(changed, expected)


def test_peg_is_input_plus_depthwise_conv():
  peg = PosConv()
  x = np.random.RandomState(0).standard_normal((2, 5, 6, 8)).astype(np.float32)
  params = random_params(peg, x)
  kernel, bias = params["proj"]["kernel"], params["proj"]["bias"]
  conv = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=8)
  np.testing.assert_allclose(jit_fast(lambda p, x: peg.apply({"params": p}, x), params, x), x + conv + bias, atol=1e-5)


def test_svt_alternates_lsa_and_gsa_and_pcpvt_uses_gsa():
  def attn_params(name):
    model = jaxvit.create_model(name, depths=(2, 2, 2, 2), img_size=64)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))["params"]
    return {k: sorted(v["attn"]) for k, v in shapes.items() if k.startswith("blocks_0_")}
  assert attn_params("twins_svt_small") == {"blocks_0_0": ["proj", "qkv"], "blocks_0_1": ["kv", "norm", "proj", "q", "sr"]}
  assert attn_params("twins_pcpvt_small")["blocks_0_0"] == ["kv", "norm", "proj", "q", "sr"]


@pytest.mark.parity
def test_svt_at_another_resolution_matches_timm():
  """64 px: stage maps 16 ... 2, so every LSA pads (16 -> 21, 8 -> 14, 4 -> 7, 2 -> 7)."""
  pytest.importorskip("timm")
  from convert.timm_reference import perturbed, timm_logits
  from jaxvit.convert import from_timm
  reference = perturbed("twins_svt_small", img_size=64, depths=(2, 2, 2, 2), num_classes=10)
  model, variables = from_timm(reference, depths=(2, 2, 2, 2))
  assert model.img_size == (64, 64) and model.num_classes == 10
  images = np.random.RandomState(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  expected = timm_logits(reference, images)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
  assert [out[f"stage{i}"].shape[1:3] for i in range(4)] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_bfloat16_runs():
  model = jaxvit.create_model("twins_svt_small", num_classes=3, depths=(2, 2, 2, 2), img_size=(64, 96),
                              dtype=jnp.bfloat16)
  (logits, out), _ = jit_fast(lambda x: model.init_with_output(jax.random.key(0), x), jnp.ones((2, 64, 96, 3)))
  assert logits.shape == (2, 3) and logits.dtype == jnp.bfloat16
  assert out["stage3"].shape == (2, 2, 3, 512) and np.isfinite(np.asarray(out["pre_logits"], np.float32)).all()


@pytest.mark.parametrize("field,value,match", [
    ("img_size", 200, "img_size=200; accepted: multiples of 32"),
    ("wss", (7, 7, 7), "wss=\\(7, 7, 7\\); accepted: 4 values, one per stage"),
    ("wss", (7, 1, 7, 7), "wss=\\(7, 1, 7, 7\\); accepted: window sizes >= 2, or None"),
    ("num_heads", (2, 4, 8, 3), "num_heads=\\(2, 4, 8, 3\\); accepted: divisors of embed_dims"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match="Twins: " + match):
    jaxvit.create_model("twins_svt_small", **{field: value})
