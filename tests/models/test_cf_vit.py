"""CF-ViT: coarse and fine logits against the official PyTorch model (from the local mirror; skipped without it), its
counts, the informative-region indices, the staged dynamic inference (fine stage on the non-exited examples only),
and bad configs."""

import contextlib
import functools
import io
import os
import subprocess
import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert import convert_state_dict
from jaxvit.dynamic import exits
from jaxvit.layers.resize import resize_bilinear_align_corners
from jaxvit.models.cf_vit import REUSED, fine_indices

OFFICIAL_REPO = "/work/.mirror/ChenMnZ+CF-ViT/repo"


def _source(path):
  return subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"HEAD:{path}"], capture_output=True, text=True,
                        check=True).stdout


@pytest.fixture(scope="module")
def official():
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of ChenMnZ/CF-ViT")
  utils = types.ModuleType("utils")  # the official `utils.py`, which `models_deit.py` imports by that name
  exec(compile(_source("utils.py"), "utils.py", "exec"), utils.__dict__)
  source = _source("deit/models_deit.py").replace(".cuda()", "").replace("@register_model\n", "")
  module = types.ModuleType("cf_vit_official")
  saved = sys.modules.get("utils")
  sys.modules["utils"] = utils
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      exec(compile(source, "models_deit.py", "exec"), module.__dict__)
  finally:
    if saved is None:
      del sys.modules["utils"]
    else:
      sys.modules["utils"] = saved
  return torch, module


@pytest.mark.parametrize("informative", [True, False])
def test_coarse_and_fine_logits_match_official(official, informative):
  torch, module = official
  torch.manual_seed(0)
  ref = module.CFVisionTransformer(embed_dim=384, depth=4, num_heads=6, mlp_ratio=4, qkv_bias=True,
                                   norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)).eval()
  ref.informative_selection = informative
  ref.target_index = [1, 2, 3]
  with torch.no_grad():
    for t in ref.state_dict().values():
      t.add_(0.02 * torch.randn_like(t))
  images = np.random.RandomState(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2))
  coarse_input = torch.nn.functional.interpolate(x, (112, 112), mode="bilinear", align_corners=True)
  with torch.no_grad():
    coarse, fine = (t.numpy() for t in ref([coarse_input, x]))
  model, variables = convert_state_dict("cf_deit_small_224", ref.state_dict(), depth=4, ema_blocks=(1, 2, 3),
                                        informative_selection=informative)
  logits, out = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  np.testing.assert_allclose(out["exit_logits0"], coarse, atol=1e-4, rtol=0)
  np.testing.assert_allclose(logits, fine, atol=1e-4, rtol=0)
  if informative:
    assert out["encoded"].shape == (2, 1 + 4 * 25 + 24, 384)
    important = ref.get_vis_data().numpy()  # the official fine indices of the refined tokens
    np.testing.assert_array_equal(fine_indices(out["informative"], 7), important)


def test_counts_match_the_official_model(official):
  torch, module = official
  fvcore = pytest.importorskip("fvcore.nn")
  ref = module.cf_deit_small().eval()
  ref.informative_selection = True
  model = jaxvit.create_model("cf_deit_small_224")
  assert jaxvit.count_params(model) == sum(p.numel() for p in ref.parameters())
  x = torch.randn(1, 3, 224, 224)
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    flops = fvcore.FlopCountAnalysis(ref, ([torch.nn.functional.interpolate(x, (112, 112)), x],))
    flops.unsupported_ops_warnings(False)
    expected = flops.total()
  from jaxvit.bench.flops import count_macs
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  macs = count_macs(model, variables, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["total"]
  assert macs + 196 * 384 == expected  # fvcore also counts the reused features' nearest upsampling, 1 per output


def test_bilinear_resize_matches_torch():
  torch = pytest.importorskip("torch")
  x = np.random.RandomState(0).standard_normal((1, 9, 9, 2)).astype(np.float32)
  expected = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), (4, 4), mode="bilinear",
                                             align_corners=True).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(resize_bilinear_align_corners(jnp.asarray(x), 4), expected, atol=1e-6)


def test_fine_indices_cover_each_coarse_token_2x2():
  index = jnp.array([[0, 8, 48]])  # on a 7x7 coarse grid: (0, 0), (1, 1), (6, 6)
  assert fine_indices(index, 7).tolist() == [[0, 30, 180, 1, 31, 181, 14, 44, 194, 15, 45, 195]]


def test_staged_dynamic_inference_runs_the_fine_stage_on_the_survivors_only():
  # 2x2 coarse tokens, the 2 most attended refined: 1 + 8 + 2 fine-stage tokens
  model = jaxvit.create_model("cf_deit_small_224", img_size=32, coarse_size=16, patch_size=8, depth=2,
                              ema_blocks=(0, 1), embed_dim=32, num_heads=2, num_classes=5)
  x = np.asarray(jax.random.normal(jax.random.key(0), (16, 32, 32, 3)))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))["params"]
  rs = np.random.RandomState(0)  # N(0, 1) weights (the head starts at zero): the predictions and confidences spread
  variables = {"params": jax.tree.map(lambda s: rs.standard_normal(s.shape).astype(np.float32), shapes)}
  logits, out = jax.jit(model.apply)(variables, x)
  coarse = [out["exit_logits0"]]
  both = [np.asarray(out["exit_logits0"]).argmax(-1), np.asarray(logits).argmax(-1)]
  confidence = np.sort(np.asarray(exits.exit_scores(out["exit_logits0"], "confidence")))
  staged = exits.StagedEarlyExit(model, variables, "confidence", 0.0)
  # threshold 0: every example leaves at the coarse stage; the middle one: 3 go on (padded to 4); 1.01: all 16
  for threshold, survivors, compiled in [(0.0, 0, {(0, 16)}), (confidence[2], 3, {(0, 16), (1, 4)}),
                                         (1.01, 16, {(0, 16), (1, 4), (1, 16)})]:
    staged.threshold = threshold
    preds, chosen = staged.predict(x)
    expected = exits.exit_index(coarse, logits, "confidence", threshold)
    assert (expected == 1).sum() == survivors
    np.testing.assert_array_equal(chosen, expected)
    np.testing.assert_array_equal(preds, np.choose(expected, both))
    assert set(staged.compiled) == compiled  # each stage compiled once per bucket size it ran at
  assert len(np.unique(both[0] == both[1])) == 2  # coarse and fine disagree somewhere: the merge is checked
  index = np.array([2, 5, 11, 13])  # the fine stage from the gathered coarse outputs = the full pass's fine logits
  fine, fine_out = staged.compiled[1, 4](variables, (x[index], {k: np.asarray(out[k])[index] for k in REUSED}))
  np.testing.assert_allclose(fine, np.asarray(logits)[index], atol=1e-5, rtol=0)
  np.testing.assert_array_equal(fine_out["informative"], np.asarray(out["informative"])[index])
  with pytest.raises(ValueError, match="coarse_only=True runs the coarse stage, fine_from= the fine stage"):
    model.apply(variables, x, coarse_only=True, fine_from=out)


@pytest.mark.parametrize("overrides,match", [
    (dict(coarse_size=96), "coarse_size=96; accepted: a multiple of patch_size=16 half of img_size=224"),
    (dict(keep_ratio=0.0), "keep_ratio=0.0; accepted: \\(0, 1\\]"),
    (dict(global_pool="avg", class_token=False), "accepted: 'learn', with class_token=True"),
    (dict(ema_blocks=(3, 12)), "ema_blocks=\\(3, 12\\); accepted: blocks 0..11"),
])
def test_bad_configs_are_one_clear_error(overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("cf_deit_small_224", **overrides)
