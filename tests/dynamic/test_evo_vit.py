"""Evo-ViT (`reduction=dict(kind="evo_vit")`): logits against the official `evo_deit.py` (from the local mirror;
skipped without it), the token counts and FLOPs of DeiT-S, and bad configs."""

import os
import subprocess
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.convert import convert_state_dict

OFFICIAL_REPO = "/work/.mirror/YifanXu74+Evo-ViT/repo"
EVO = dict(global_pool="avg", fc_norm=True, reduction=dict(kind="evo_vit"))


def _official():
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of YifanXu74/Evo-ViT")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:deit/evo_deit.py"], capture_output=True,
                          text=True, check=True).stdout.replace("@register_model\n", "")
  source = source.replace("from timm.models.layers import StdConv2dSame, ", "from timm.layers import ")
  module = types.ModuleType("evo_deit_official")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    exec(compile(source, "evo_deit.py", "exec"), module.__dict__)
  return torch, module


def to_timm_names(state_dict, depth):
  """The official names -> timm's ViT names (its split `qk` / `v` projections fused into `qkv`)."""
  out = {k: v for k, v in state_dict.items() if k.split(".")[0] in ("patch_embed", "cls_token", "pos_embed", "head")}
  out.update({k.replace("norm.", "fc_norm.", 1): v for k, v in state_dict.items() if k.startswith("norm.")})
  for i in range(depth):
    for leaf in ("weight", "bias"):
      out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate([state_dict[f"qks.{i}.qk.{leaf}"],
                                                           state_dict[f"vs.{i}.v.{leaf}"]])
      out[f"blocks.{i}.norm1.{leaf}"] = state_dict[f"norms.{i}.{leaf}"]
      out[f"blocks.{i}.attn.proj.{leaf}"] = state_dict[f"projs.{i}.{leaf}"]
      for name in ("norm2", "mlp.fc1", "mlp.fc2"):
        out[f"blocks.{i}.{name}.{leaf}"] = state_dict[f"blocks.{i}.{name}.{leaf}"]
  return out


def test_logits_match_official():
  torch, module = _official()
  torch.manual_seed(0)
  ref = module.EvoVisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=12, num_heads=2,
                                    tradeoff=[1] * 4 + [0.5] * 8, prune_ratio=[1] * 4 + [0.5] * 8).eval()
  with torch.no_grad():
    for t in ref.state_dict().values():
      t.add_(0.05 * torch.randn_like(t))
  images = np.random.RandomState(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  state = to_timm_names({k: v.numpy() for k, v in ref.state_dict().items()}, 12)
  model, variables = convert_state_dict("deit_tiny_patch16_224", state, img_size=64, embed_dim=64, num_heads=2, **EVO)
  logits, out = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
  assert [out[f"block{i}"].shape[1] for i in range(12)] == [17] * 4 + [9] * 3 + [17] + [9] * 3 + [17]


def test_deit_small_token_counts_and_flops():
  model = jaxvit.create_model("deit_small_patch16_224", **EVO)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  macs = count_macs(model, variables, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["total"]
  assert round(macs / 1e9, 2) == 3.04  # the paper: 3.0 GFLOPs (DeiT-S 4.6)
  assert jaxvit.count_params(model) == jaxvit.count_params(jaxvit.create_model("deit_small_patch16_224",
                                                                               global_pool="avg"))  # parameter-free


@pytest.mark.parametrize("reduction,match", [
    (dict(kind="evo_vit", stages=((0, 4),)), "stages=\\(\\(0, 4\\),\\); accepted: increasing non-overlapping"),
    (dict(kind="evo_vit", stages=((4, 8), (6, 12))), "accepted: increasing non-overlapping"),
    (dict(kind="evo_vit", keep_rate=0.0), "keep_rate=0.0, tradeoff=0.5; accepted: \\(0, 1\\] each"),
    (dict(kind="evo_vit", ratio=0.5), "accepts \\['keep_rate', 'stages', 'tradeoff'\\]"),
])
def test_bad_configs_are_one_clear_error(reduction, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_small_patch16_224", global_pool="avg", reduction=reduction)
