"""CSWin Transformer (jaxvit.models.cswin): the cross-shaped window attention against attention masked to the stripes
with a per-stripe LePE convolution written out, forward / backward, other (non-square) input sizes and the error for an
incompatible one, config errors, bfloat16, the official parameter count and fvcore MACs, and logits against the
official `models/cswin.py` with the same weights (when its mirror and torch are available)."""

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
from jaxvit.layers.stripe_attention import cross_shaped_window_attention
from jaxvit.models.cswin import CSWinTransformer
from fast_jit import jit_fast
from numpy_params import random_params

OFFICIAL_REPO = "/work/.mirror/microsoft+CSWin-Transformer/repo"
# stage maps 8, 4, 2, 1 at 32 px: stripes of width 1 and 2, a stage whose map equals its split size, full attention
TINY = dict(embed_dim=8, depths=(1, 2, 1, 1), split_sizes=(1, 2, 2, 1), num_heads=(2, 2, 4, 4))
TWO_STAGES = dict(embed_dim=8, depths=(1, 1), split_sizes=(2, 1), num_heads=(2, 2))  # stripes, then full attention


class _CSWinAttention(nn.Module):
  num_heads: int
  split_size: int
  full: bool = False

  @nn.compact
  def __call__(self, x):
    return cross_shaped_window_attention(x, num_heads=self.num_heads, split_size=self.split_size, full=self.full)


def naive_cswin_attention(x, p, num_heads, sw, full):
  """Eq. 1-3 by loops: every head attends to the keys of its query's stripe (vertical stripes `H x sw` for the first
  half of the heads, horizontal `sw x W` for the second; everything with `full`), plus the 3 x 3 depthwise conv of V
  over the neighbours inside the same stripe, then the output projection."""
  _, h, w, c = x.shape
  d = c // num_heads
  qkv = np.einsum("bhwc,ctkd->bhwtkd", x, p["qkv"]["kernel"]) + p["qkv"]["bias"]  # [B, H, W, 3, heads, d]
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  rows, cols = rows.reshape(-1), cols.reshape(-1)
  y = np.zeros(x.shape[:3] + (num_heads, d))
  for head in range(num_heads):
    branch = 0 if full or head < num_heads // 2 else 1
    stripe = (np.zeros_like(rows) if full else cols // sw if branch == 0 else rows // sw)  # stripe id of each token
    same = stripe[:, None] == stripe[None, :]  # [N, N]
    q, k, v = (qkv[:, :, :, t, head].reshape(x.shape[0], h * w, d) for t in range(3))
    logits = np.einsum("bqd,bkd->bqk", q, k) / np.sqrt(d)
    logits = np.where(same, logits, -np.inf)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    y[:, :, :, head] = np.einsum("bqk,bkd->bqd", attn / attn.sum(-1, keepdims=True), v).reshape(-1, h, w, d)
    local = head if full or branch == 0 else head - num_heads // 2  # channel offset inside the branch's get_v
    conv = p[f"attns_{branch}"]["get_v"]
    kernel = conv["kernel"][:, :, 0, local * d:(local + 1) * d]  # [3, 3, d]
    v_map = qkv[:, :, :, 2, head]  # [B, H, W, d]
    stripe_map = stripe.reshape(h, w)
    for r in range(h):
      for s in range(w):
        acc = conv["bias"][local * d:(local + 1) * d].astype(np.float64).copy()
        for i in range(3):
          for j in range(3):
            rr, ss = r + i - 1, s + j - 1
            if 0 <= rr < h and 0 <= ss < w and stripe_map[rr, ss] == stripe_map[r, s]:
              acc = acc + v_map[:, rr, ss] * kernel[i, j]
        y[:, r, s, head] += acc
  return np.einsum("bhwkd,kdc->bhwc", y, p["proj"]["kernel"]) + p["proj"]["bias"]


@pytest.mark.parametrize("full,hw,sw", [(False, (6, 4), 2), (False, (3, 3), 3), (True, (5, 3), 1)])
def test_attention_matches_masked_stripes_and_per_stripe_conv(full, hw, sw):
  x = np.random.RandomState(1).standard_normal((2, *hw, 8)).astype(np.float32)
  layer = _CSWinAttention(num_heads=4, split_size=sw, full=full)
  params = random_params(layer, x, scale=0.5)
  assert sorted(params) == (["attns_0", "proj", "qkv"] if full else ["attns_0", "attns_1", "proj", "qkv"])
  assert params["attns_0"]["get_v"]["kernel"].shape == (3, 3, 1, 8 if full else 4)
  got = np.asarray(jit_fast(lambda p, x: layer.apply({"params": p}, x), params, x))
  expected = naive_cswin_attention(x.astype(np.float64), jax.tree.map(np.float64, params), 4, sw, full)
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=2e-5)


def test_attention_rejects_maps_not_divisible_by_the_stripe():
  layer = _CSWinAttention(num_heads=2, split_size=3)
  with pytest.raises(ValueError, match="split_size=3"):
    jax.eval_shape(lambda x: layer.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 6, 4, 8), jnp.float32))


def test_forward_backward_non_square_and_outputs():
  model = CSWinTransformer(num_classes=3, img_size=(32, 48), drop_rate=0.1, drop_path_rate=0.2, attn_drop_rate=0.1,
                           **TWO_STAGES)
  model.validate()
  images = jax.random.normal(jax.random.key(0), (2, 32, 48, 3))
  params = random_params(model, images)

  def loss(p):
    logits, out = model.apply({"params": p}, images, train=True,
                              rngs={"dropout": jax.random.key(1), "drop_path": jax.random.key(2)})
    return jnp.mean(jax.nn.log_softmax(logits)[:, 0]), (logits, out)

  (value, (logits, out)), grads = jit_fast(jax.value_and_grad(loss, has_aux=True), params)
  assert logits.shape == (2, 3) and out["pre_logits"].shape == (2, model.num_features) == (2, 16)
  assert [out[f"stage{i}"].shape for i in range(2)] == [(2, 8, 12, 8), (2, 4, 6, 16)]
  assert sorted(params["stage1_0"]) == ["attns_0", "attns_1", "mlp", "norm1", "norm2", "proj", "qkv"]
  assert "attns_1" not in params["stage2_0"]  # the last stage: one full-attention branch
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert np.isfinite(value) and all(np.isfinite(norms)) and min(norms) > 0  # every parameter gets a gradient


def test_other_input_sizes_and_the_incompatible_size_error():
  model = CSWinTransformer(num_classes=3, img_size=32, **TINY)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
  for size, maps in (((64, 64), (16, 8, 4, 2)), ((62, 28), ((15, 7), (8, 4), (4, 2), (2, 1)))):
    logits, out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params,
                                 jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
    maps = [m if isinstance(m, tuple) else (m, m) for m in maps]
    assert logits.shape == (1, 3) and [out[f"stage{i}"].shape[1:3] for i in range(4)] == maps
  with pytest.raises(ValueError, match=r"input size=\(40, 40\); accepted: .*split_sizes=\(1, 2, 2, 1\)"):
    jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params, jax.ShapeDtypeStruct((1, 40, 40, 3),
                                                                                           jnp.float32))
  for size in (112, 220, 336, (224, 448)):  # stage-3 maps of 7, 14, 21 and 14 x 28 take 7-wide stripes
    jaxvit.create_model("cswin_tiny_224", img_size=size)
  with pytest.raises(ValueError, match=r"img_size=200; accepted: .*multiples of 112"):
    jaxvit.create_model("cswin_tiny_224", img_size=200)  # stage-2 map 25 is odd
  with pytest.raises(ValueError, match=r"img_size=256; accepted: .*multiples of 192"):
    jaxvit.create_model("cswin_base_384", img_size=256)  # stage-3 map 16 is not a multiple of 12


@pytest.mark.parametrize("overrides,field", [
    (dict(depths=(1, 2, 21)), "split_sizes"), (dict(depths=(1, 0, 21, 1)), "depths"),
    (dict(split_sizes=(1, 2, 0, 7)), "split_sizes"), (dict(num_heads=(2, 4, 8)), "num_heads"),
    (dict(num_heads=(2, 3, 8, 16)), "num_heads"), (dict(num_heads=(2, 4, 7, 16)), "num_heads"),
    (dict(drop_path_rate=1.0), "drop_path_rate"), (dict(img_size=224 + 4), "img_size")])
def test_config_errors(overrides, field):
  with pytest.raises(ValueError, match=f"CSWinTransformer: {field}="):
    jaxvit.create_model("cswin_tiny_224", **overrides)


def test_odd_heads_in_the_last_stage_are_allowed():
  jaxvit.create_model("cswin_tiny_224", num_heads=(2, 4, 8, 1))


def test_bfloat16():
  model = CSWinTransformer(num_classes=3, img_size=32, dtype=jnp.bfloat16, **TWO_STAGES)
  images = jnp.ones((1, 32, 32, 3), jnp.bfloat16)
  logits, out = jit_fast(lambda p, x: model.apply({"params": p}, x), random_params(model, images), images)
  assert logits.dtype == jnp.bfloat16 and out["stage0"].dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


# official sum(p.numel()) and fvcore total (FlopCountAnalysis of the official model at its img_size, 1 image)
OFFICIAL_COUNTS = {"cswin_tiny_224": (22320552, 4341011968), "cswin_small_224": (34643304, 6827308032),
                   "cswin_base_224": (77382184, 14995238400), "cswin_large_224": (173262664, 33189979392),
                   "cswin_base_384": (77382184, 47080888320), "cswin_large_384": (173262664, 102057772032)}


@pytest.mark.parametrize("name", [n if n == "cswin_tiny_224" else pytest.param(n, marks=pytest.mark.parity_all)
                                  for n in OFFICIAL_COUNTS])
def test_official_parameter_count_and_macs(name):
  model = jaxvit.create_model(name)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  assert jaxvit.count_params(variables["params"]) == OFFICIAL_COUNTS[name][0]
  images = jax.ShapeDtypeStruct(jaxvit.utils.input_shape(model), jnp.float32)
  assert count_macs(model, variables, images)["total"] == OFFICIAL_COUNTS[name][1]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  """The official `models/cswin.py` from the local mirror, imported with torch and timm; skips when missing."""
  pytest.importorskip("torch")
  pytest.importorskip("timm")
  pytest.importorskip("einops")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of microsoft/CSWin-Transformer")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:models/cswin.py"], capture_output=True,
                          text=True, check=True).stdout
  path = tmp_path_factory.mktemp("cswin_official")
  (path / "official_cswin.py").write_text(source)
  sys.path.insert(0, str(path))
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      import official_cswin
  finally:
    sys.path.remove(str(path))
  return official_cswin


def check_official_logits(official, name, scale, **overrides):
  """Random official weights (each moved by `scale` x N(0, 1)) converted by `jaxvit.convert.cswin` give the same
  float32 logits on 2 random images: |diff| <= 1e-4 x max(1, |logit|)."""
  import torch
  from jaxvit.convert import convert_state_dict
  model = jaxvit.create_model(name, **overrides)
  torch.manual_seed(0)
  reference = official.CSWinTransformer(img_size=model.img_size, num_classes=model.num_classes,
                                        embed_dim=model.embed_dim, depth=list(model.depths),
                                        split_size=list(model.split_sizes), num_heads=list(model.num_heads)).eval()
  with torch.no_grad():
    for p in reference.parameters():
      p.add_(scale * torch.randn_like(p))
  model, variables = convert_state_dict(name, reference.state_dict(), **overrides)
  assert jaxvit.count_params(variables["params"]) == sum(p.numel() for p in reference.parameters())
  images = np.random.RandomState(3).standard_normal((2, model.img_size, model.img_size, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()), rtol=0)
  return reference


def test_logits_match_official(official):
  """The 32 px clone has stripes of width 1 and 2, a stage the official code runs with one full-attention branch (map 2
  = split size 2; its `get_v` is split into the two halves here) and the full-attention last stage."""
  reference = check_official_logits(official, "cswin_tiny_224", 0.1, img_size=32, num_classes=5, **TINY)
  assert reference.stage3[0].branch_num == 1 and reference.stage2[0].branch_num == 2


@pytest.mark.parity_all
@pytest.mark.parametrize("name", ["cswin_tiny_224", "cswin_base_384"])
def test_full_size_logits_match_official(official, name):
  check_official_logits(official, name, 0.02)
