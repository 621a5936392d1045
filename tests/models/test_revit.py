"""ReViT: alpha = 1 is the plain DeiT (jaxvit's own weights), the residual really changes deeper blocks, other input
sizes, bad configs, bfloat16, and (when the official code is at hand) parameter count, fvcore GMACs and logits
against the official PyTorch model (ADiko1997/ReViT)."""

import logging
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers.residual_attention import ResidualAttention
from test_skipat import extract, init, load_package, to_jaxvit

OFFICIAL_REPO = "/work/.mirror/ADiko1997+ReViT/repo"


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
  return extract(OFFICIAL_REPO, "REVIT_OFFICIAL", ["model/revit_model.py", "model/attention.py", "model/common.py"],
                 tmp_path_factory)


def official_revit(root, embed_dim, num_heads, depth, img_size, num_classes, class_token):
  """The official `ReViT` built from a config like `config/config-ReViT-B.yaml` at other sizes; its eval-mode
  softmax head activation is removed so it returns logits."""
  torch = pytest.importorskip("torch")
  (official,) = load_package("revit_official_model", os.path.join(root, "model"), "revit_model")
  ns = types.SimpleNamespace
  cfg = ns(DATA=ns(crop_size=img_size), MODEL=ns(num_classes=num_classes, dropout_rate=0.0, head_act="softmax"),
           ReViT=ns(mode="conv", pool_first=False, patch_kernel=[16, 16], patch_stride=[16, 16], patch_padding=[0, 0],
                    embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=4, qkv_bias=True, drop_path=0.0, depth=depth,
                    dim_mul=[], head_mul=[], pool_qkv_kernel=[], pool_kv_stride_adaptive=[], pool_q_stride=[],
                    zero_decay_pos=False, use_abs_pos=True, use_rel_pos=False, rel_pos_zero_init=False,
                    residual_pooling=False, dim_mul_in_att=False, alpha=True, visualize=False,
                    cls_embed_on=class_token))
  torch.manual_seed(0)
  ref = official.ReViT(cfg)
  ref.head.act = torch.nn.Identity()
  with torch.no_grad():  # random, non-trivial norms, biases and alpha
    for p in ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
    ref.alpha.fill_(0.3)
  return ref.eval()


def small(name="deit_small_revit_patch16_224", **overrides):
  kw = dict(img_size=32, depth=2, embed_dim=16, num_heads=2, num_classes=5)
  return jaxvit.create_model(name, **{**kw, **overrides})


def test_alpha_one_is_plain_deit():
  deit = jaxvit.create_model("deit_small_patch16_224", img_size=32, depth=3, embed_dim=16, num_heads=2, num_classes=5)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  (expected, _), variables = init(deit, images)
  fixed = small(depth=3, alpha=1.0, learn_alpha=False)
  np.testing.assert_allclose(np.asarray(jax.jit(fixed.apply)(variables, images)[0]), np.asarray(expected), atol=1e-5)
  learned = small(depth=3)
  params = dict(variables["params"], alpha=jnp.ones((1,)))
  np.testing.assert_allclose(np.asarray(jax.jit(learned.apply)({"params": params}, images)[0]), np.asarray(expected),
                             atol=1e-5)
  params["alpha"] = jnp.full((1,), 0.5)  # the residual changes blocks 1 and 2, not block 0
  _, out = jax.jit(learned.apply)({"params": params}, images)
  _, plain = jax.jit(deit.apply)(variables, images)
  np.testing.assert_allclose(np.asarray(out["block0"]), np.asarray(plain["block0"]), atol=1e-5)
  assert np.abs(np.asarray(out["block2"]) - np.asarray(plain["block2"])).max() > 1e-3


def test_residual_attention_blends_scores():
  x = jax.random.normal(jax.random.key(0), (1, 4, 8))
  layer = ResidualAttention(2, return_attention=True)
  params = layer.init(jax.random.key(1), x, train=False)
  residual = jax.random.normal(jax.random.key(2), (1, 2, 4, 4))
  _, plain, _ = layer.apply(params, x, train=False)
  _, blended, aux = layer.apply(params, x, residual, 0.25, train=False)
  np.testing.assert_allclose(np.asarray(blended), 0.25 * np.asarray(plain) + 0.75 * np.asarray(residual), atol=1e-5)
  np.testing.assert_allclose(np.asarray(aux["attn"]), np.asarray(jax.nn.softmax(blended)), atol=1e-6)


def test_alpha_is_learned_and_attention_returned():
  model = small(return_attention=True)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  (_, out), variables = init(model, images)
  assert variables["params"]["alpha"].shape == (1,) and out["attn1"].shape == (2, 2, 5, 5)
  grad = jax.jit(jax.grad(lambda p: model.apply({"params": p}, images)[0].sum()))(variables["params"])
  assert np.abs(np.asarray(grad["alpha"])).max() > 0


def test_other_input_sizes_and_base_layout():
  model = small("revit_base_patch16_224", img_size=(32, 48))
  (logits, out), variables = init(model, jnp.ones((1, 32, 48, 3)))
  assert logits.shape == (1, 5) and out["block1"].shape == (1, 6, 16)  # no class token: 2 x 3 patches
  assert variables["params"]["pos_embed"].shape == (1, 6, 16) and "tokens" not in variables["params"]
  with pytest.raises(ValueError, match="img_size"):
    model.apply(variables, jnp.ones((1, 48, 48, 3)))


def test_bad_configs():
  for overrides, field in ((dict(alpha=1.5, learn_alpha=False), "alpha"), (dict(scan=True), "scan"),
                           (dict(reduction=dict(kind="tome", r=1)), "reduction"), (dict(num_heads=3), "num_heads"),
                           (dict(mixer="pooling"), "mixer"), (dict(pos_embed="rope_axial"), "pos_embed"),
                           (dict(pos_embed="learn+fire"), "pos_embed"), (dict(pos_embed="peg"), "pos_embed"),
                           (dict(init_values=1e-5), "init_values"), (dict(img_size=40), "img_size")):
    with pytest.raises(ValueError, match=field):
      small(**overrides)


def test_bfloat16():
  model = small(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  (logits, _), _ = init(model, jnp.ones((2, 32, 32, 3), jnp.bfloat16))
  assert logits.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(logits, np.float32)))


@pytest.mark.parametrize("name,class_token", [("revit_base_patch16_224", False),
                                              ("deit_small_revit_patch16_224", True)])
def test_logits_match_official(name, class_token, official_dir):
  torch = pytest.importorskip("torch")
  model = small(name, img_size=48, depth=3, embed_dim=32)
  ref = official_revit(official_dir, 32, 2, 3, 48, 5, class_token)
  renames = {"head": "head.projection"}
  params = to_jaxvit(ref.state_dict(), jax.eval_shape(lambda: jaxvit.init_variables(model))["params"], renames)
  images = np.random.RandomState(0).standard_normal((2, 48, 48, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.parity_all  # maintainer run: full-size counts against the official code
@pytest.mark.parametrize("name,size", [("revit_base_patch16_224", (768, 12)),
                                       ("deit_small_revit_patch16_224", (384, 6))])
def test_counts_match_official(name, size, official_dir):
  torch = pytest.importorskip("torch")
  fvcore = pytest.importorskip("fvcore.nn")
  from jaxvit.bench.flops import count_macs
  model = jaxvit.create_model(name)
  ref = official_revit(official_dir, *size, 12, 224, 1000, model.class_token)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  assert sum(p.numel() for p in ref.parameters()) == sum(x.size for x in jax.tree.leaves(variables))
  logging.disable(logging.WARNING)
  try:
    flops = fvcore.FlopCountAnalysis(ref, torch.zeros(1, 3, 224, 224)).total()
  finally:
    logging.disable(logging.NOTSET)
  assert flops == count_macs(model, variables, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["total"]
