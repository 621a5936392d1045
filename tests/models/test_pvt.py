"""PVT v1 (jaxvit.models.pvt): the position embeddings' bilinear resize against PyTorch's, logits against the
official `classification/pvt.py` (when its mirror and torch are available) at the reference size and at a
non-square size that does not divide into patches, the official parameter counts and fvcore GMACs, stage maps at
other input sizes, clear config errors and bfloat16."""

import os
import subprocess
import sys
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.convert.mapping import convert_state_dict, default_timm_name
from jaxvit.models.pvt import PyramidVisionTransformer, interpolate_bilinear
from fast_jit import jit_fast

OFFICIAL_REPO = "/work/.mirror/whai362+PVT/repo"
OFFICIAL_COMMIT = "57e2dfaa5a46f9050d76f306a4fcd9a7c061f520"  # branch v2, which holds classification/pvt.py
# a narrow PVT: every code path of pvt_tiny (reduced attention in stages 1-3, the class token in stage 4)
NARROW = dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(1, 2, 1, 1),
              sr_ratios=(8, 4, 2, 1))


@pytest.fixture(scope="module")
def official():
  """The official `pvt.py` from the local mirror, imported with torch and timm (its `register_model` dropped, so
  timm's registry is left alone; `timm.models.layers` is now `timm.layers`); skips when any is missing."""
  pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of whai362/PVT")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"{OFFICIAL_COMMIT}:classification/pvt.py"],
                          capture_output=True, text=True, check=True).stdout
  source = source.replace("from timm.models.layers import", "from timm.layers import")
  source = source.replace("from timm.models.registry import register_model\n", "").replace("@register_model\n", "")
  module = type(sys)("official_pvt")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    exec(compile(source, "official_pvt.py", "exec"), module.__dict__)
  return module


def perturbed(module):
  """Weights (LayerNorms, position embeddings, class token, head included) moved off their init."""
  import torch
  torch.manual_seed(0)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return module.eval()


@pytest.mark.parametrize("src,dst", [((7, 7), (7, 7)), ((7, 7), (12, 5)), ((14, 10), (6, 9)), ((3, 1), (1, 4))])
def test_interpolate_bilinear_matches_torch(src, dst):
  """Identity, up-, down- and mixed resizes, with PyTorch's clamped half-pixel source coordinates."""
  torch = pytest.importorskip("torch")
  x = np.random.RandomState(0).standard_normal((2, *src, 3)).astype(np.float32)
  expected = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=dst, mode="bilinear")
  got = interpolate_bilinear(jnp.asarray(x), dst)
  np.testing.assert_allclose(np.asarray(got), expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)
  if src == dst:
    np.testing.assert_array_equal(np.asarray(got), x)


@pytest.mark.parametrize("img_size,input_hw", [(64, (64, 64)), (64, (100, 72))],
                         ids=["reference_size", "resized_non_square"])
def test_logits_match_official(official, img_size, input_hw):
  """Stored 16 x 16 ... 2 x 2 (+ class token) position grids; at 100 x 72 px the maps are 25 x 18 ... 3 x 2: every
  grid resized, the patch embeddings and reductions dropping the last rows / columns."""
  import torch
  reference = perturbed(official.PyramidVisionTransformer(
      img_size=img_size, patch_size=4, num_classes=7, qkv_bias=True,
      norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6), **NARROW))
  model = PyramidVisionTransformer(num_classes=7, img_size=img_size, **NARROW)
  variables = convert_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, model,
                                 lambda path, _: default_timm_name(path))
  images = np.random.RandomState(1).standard_normal((2, *input_hw, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
  assert out["stage3"].shape == (2, input_hw[0] // 32, input_hw[1] // 32, 64)


@pytest.mark.parity_all
@pytest.mark.parametrize("name", ["pvt_tiny", "pvt_small", "pvt_medium", "pvt_large"])
def test_registered_variant_matches_official(official, name):
  """A registered variant at 224 px, every block, against the official constructor of the same name."""
  import torch
  reference = perturbed(getattr(official, name)())
  model = jaxvit.create_model(name)
  variables = convert_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, model,
                                 lambda path, _: default_timm_name(path))
  images = np.random.RandomState(1).standard_normal((1, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_params_and_fvcore_gmacs_equal_official(official):
  """pvt_tiny: sum(p.numel()) and fvcore's count (the identity resizes of stages 2-4 included) to the unit; the
  other variants under `-m parity_all` (and rounded in tests/published.py)."""
  check_counts(official, "pvt_tiny")


@pytest.mark.parity_all
@pytest.mark.parametrize("name", ["pvt_small", "pvt_medium", "pvt_large"])
def test_params_and_fvcore_gmacs_equal_official_all(official, name):
  check_counts(official, name)


def check_counts(official, name):
  import torch
  fvcore = pytest.importorskip("fvcore.nn")
  reference = getattr(official, name)().eval()
  model = jaxvit.create_model(name)
  assert jaxvit.count_params(model) == sum(p.numel() for p in reference.parameters())
  analysis = fvcore.FlopCountAnalysis(reference, torch.zeros(1, 3, 224, 224))
  analysis.unsupported_ops_warnings(False)
  analysis.uncalled_modules_warnings(False)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  assert count_macs(model, variables, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["total"] == \
      analysis.total()


def test_other_input_sizes_stage_maps_and_pos_embed_shapes():
  model = PyramidVisionTransformer(num_classes=3, img_size=(64, 32), **NARROW)
  images = jnp.ones((1, 64, 32, 3))
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), images)))["params"]
  assert [shapes[f"pos_embed{k}"].shape for k in (1, 2, 3, 4)] == [(1, 128, 16), (1, 32, 32), (1, 8, 40), (1, 3, 64)]
  other = jax.ShapeDtypeStruct((2, 75, 130, 3), jnp.float32)
  logits, out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), shapes, other)
  assert logits.shape == (2, 3) and out["pre_logits"].shape == (2, 64)
  assert [out[f"stage{k}"].shape[1:3] for k in range(4)] == [(18, 32), (9, 16), (4, 8), (2, 4)]
  with pytest.raises(ValueError, match="input size=\\(16, 64\\); accepted: sizes whose stage maps"):
    jax.eval_shape(lambda p, x: model.apply({"params": p}, x), shapes, jax.ShapeDtypeStruct((1, 16, 64, 3),
                                                                                            jnp.float32))


@pytest.mark.parametrize("field,value,match", [
    ("sr_ratios", (8, 4, 2, 2), "sr_ratios=\\(8, 4, 2, 2\\); accepted: ratios >= 1, the last 1"),
    ("embed_dims", (64, 128, 320), "embed_dims=\\(64, 128, 320\\); accepted: 4 values, one per stage"),
    ("num_heads", (1, 2, 3, 8), "num_heads=\\(1, 2, 3, 8\\); accepted: divisors of embed_dims"),
    ("img_size", 28, "img_size=28; accepted: sizes whose stage maps \\[\\(7, 7\\), .* are at least sr_ratios"),
    ("depths", (2, 2, 0, 2), "depths=\\(2, 2, 0, 2\\); accepted: stage depths >= 1"),
    ("drop_rate", 1.0, "drop_rate=1.0; accepted: \\[0, 1\\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match="PyramidVisionTransformer: " + match):
    jaxvit.create_model("pvt_tiny", **{field: value})


def test_bfloat16():
  model = PyramidVisionTransformer(num_classes=3, img_size=32, depths=(1, 1, 1, 1), embed_dims=(8, 16, 16, 32),
                                   num_heads=(1, 2, 2, 4), dtype=jnp.bfloat16)
  images = jnp.ones((2, 48, 32, 3), jnp.bfloat16)  # stage 1 resized from 8 x 8 to 12 x 8
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), images)))["params"]
  rs = np.random.RandomState(0)
  params = jax.tree.map(lambda s: (0.1 * rs.standard_normal(s.shape)).astype(np.float32), shapes)
  logits, out = jit_fast(lambda p, x: model.apply({"params": p}, x), params, images)
  assert logits.dtype == jnp.bfloat16 and out["pre_logits"].dtype == jnp.bfloat16
  assert [out[f"stage{k}"].shape[1:3] for k in range(4)] == [(12, 8), (6, 4), (3, 2), (1, 1)]
  assert np.all(np.isfinite(np.asarray(logits, np.float32)))
