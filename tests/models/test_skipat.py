"""SkipAt: skipped blocks have no attention, Phi is on the gradient path, other input sizes, bad configs, bfloat16,
and (when the official code is at hand) parameter count, fvcore GMACs and logits against the official PyTorch model
(Qualcomm-AI-research/skip-attention)."""

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import tarfile
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

import jaxvit
from jaxvit.convert.mapping import torch_to_flax_layout
from jaxvit.layers.skip_attention import EfficientChannelAttention

OFFICIAL_REPO = "/work/.mirror/Qualcomm-AI-research+skip-attention/repo"


def extract(repo, env, paths, tmp_path_factory):
  """A local mirror's `paths` extracted to a temporary directory (or the checkout named by `env`); skips if absent."""
  if os.environ.get(env):
    return os.environ[env]
  if not os.path.isdir(repo):
    pytest.skip(f"official code not found (no local mirror {repo}; set {env} to a checkout)")
  out = tmp_path_factory.mktemp(env.lower())
  archive = subprocess.run(["git", "--git-dir", repo, "archive", "HEAD", *paths], capture_output=True,
                           check=True).stdout
  tarfile.open(fileobj=io.BytesIO(archive)).extractall(out, filter="data")
  return str(out)


def load_package(name, path, *modules):
  """Imports `path` as package `name` (no `__init__.py` needed) and returns its `modules`."""
  if name not in sys.modules:
    spec = importlib.util.spec_from_loader(name, loader=None, is_package=True)
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [path]
    sys.modules[name] = package
  with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.simplefilter("ignore")
    return [importlib.import_module(f"{name}.{m}") for m in modules]


# jaxvit module -> official submodule name where they differ (LeFF's nn.Sequential entries, ECA's conv)
RENAMES = {"linear1": "linear1.0", "dwconv": "dwconv.0", "linear2": "linear2.0", "eca": "eca.conv"}


def to_jaxvit(state_dict, params, renames=RENAMES):
  """Official PyTorch state dict -> jaxvit params (the shapes of `params`)."""
  new = {}
  for path, target in flatten_dict(params).items():
    parts = [p for p in path if p != "encoder" and p != "tokens"]
    parts = [".".join(p.rsplit("_", 1)) if p.startswith("blocks_") else renames.get(p, p) for p in parts]
    if parts[0] == "patch_embed":
      parts.insert(1, "proj")
    leaf = {"kernel": "weight", "scale": "weight"}.get(parts[-1], parts[-1])
    tensor = state_dict[".".join(parts[:-1] + [leaf])].detach().numpy()
    new[path] = jnp.asarray(torch_to_flax_layout(tensor, target.shape))
  return unflatten_dict(new)


def official_skipat(root, embed_dim, num_heads, depth, skip, img_size, num_classes):
  """The official `VisionTransformerSkipAt` on timm 1.0.31 modules: its `forward_features`, `BlockSkipAt.forward` and
  `LeFF` run unchanged; the parent modules come from today's timm (the code targets timm 0.5.4, whose constructors
  take other positional arguments), with the explicit attention products of 0.5.4 (`fused_attn = False`)."""
  torch = pytest.importorskip("torch")
  from timm.models.vision_transformer import VisionTransformer
  official, leff = load_package("model", os.path.join(root, "model"), "vit_skipat", "uformer_utils")
  torch.manual_seed(0)
  ref = VisionTransformer(img_size=img_size, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                          qkv_bias=True, num_classes=num_classes)
  ref.__class__ = official.VisionTransformerSkipAt
  ref.skip = skip
  for blk in ref.blocks:
    blk.__class__ = official.BlockSkipAt
    blk.drop_path = torch.nn.Identity()
    blk.attn.fused_attn = False
  for k in range(1, len(skip) + 1):
    setattr(ref, f"param_{k}", leff.LeFF(dim=embed_dim, hidden_dim=2 * embed_dim))
  ref.parametric = [getattr(ref, f"param_{k}") for k in range(1, len(skip) + 1)]
  ref.pre_logits = torch.nn.Identity()
  ref.forward = lambda x: ref.head(ref.forward_features(x))
  with torch.no_grad():  # random, non-trivial norms, head and ECA
    for p in ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return ref.eval()


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
  return extract(OFFICIAL_REPO, "SKIPAT_OFFICIAL", ["model"], tmp_path_factory)


def small(**overrides):
  kw = dict(img_size=32, depth=2, skip_blocks=(1,), embed_dim=16, num_heads=2, num_classes=5, phi_kernel=3)
  return jaxvit.create_model("deit_small_skipat_patch16_224", **{**kw, **overrides})


def init(model, images, seed=0):
  """`((logits, out), variables)`: variables of `model.init`'s shapes filled from numpy (compiling the random init
  takes longer than the forward), then one jitted apply."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: jaxvit.init_variables(model)))
  rs = np.random.RandomState(seed)
  variables = jax.tree.map(lambda s: jnp.asarray(0.2 * rs.standard_normal(s.shape), s.dtype), shapes)
  return jax.jit(model.apply)(variables, images), variables


def test_skipped_blocks_reuse_attention_through_phi():
  model = small(depth=4, skip_blocks=(1, 2))
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  (logits, out), variables = init(model, images)
  params = variables["params"]
  enc = params["encoder"]
  assert set(enc["blocks_1"]) == set(enc["blocks_2"]) == {"norm2", "mlp"}  # no norm1, no attention
  assert {"norm1", "attn"} <= set(enc["blocks_0"]) and {"norm1", "attn"} <= set(enc["blocks_3"])
  assert sorted(k for k in enc if k.startswith("param_")) == ["param_1", "param_2"]
  assert logits.shape == (2, 5) and out["block3"].shape == (2, 5, 16)

  def loss(p):
    return jnp.sum(model.apply({"params": p}, images)[1]["block2"] ** 2)
  grads = jax.jit(jax.grad(loss))(params)["encoder"]
  for module in ("param_1", "param_2"):  # block 2 gets Phi_2(Phi_1(block 0's attention output))
    assert all(np.any(np.asarray(g)) for g in jax.tree.leaves(grads[module])), module
  assert np.any(np.asarray(grads["blocks_0"]["attn"]["qkv"]["kernel"]))
  assert not np.any(np.asarray(grads["blocks_3"]["attn"]["qkv"]["kernel"]))  # after block 2: no influence


def test_eca_equals_formula():
  x = jax.random.normal(jax.random.key(0), (2, 6, 5))
  layer = EfficientChannelAttention(3)
  params = nn.meta.unbox(layer.init(jax.random.key(1), x)["params"])
  w = np.asarray(params["kernel"])
  m = np.pad(np.asarray(x).mean(1), ((0, 0), (1, 1)))
  gate = 1 / (1 + np.exp(-(w[0] * m[:, :-2] + w[1] * m[:, 1:-1] + w[2] * m[:, 2:])))
  np.testing.assert_allclose(np.asarray(layer.apply({"params": params}, x)), np.asarray(x) * gate[:, None], atol=1e-6)


def test_other_input_sizes():
  model = small(img_size=(32, 48))
  (logits, out), variables = init(model, jnp.ones((1, 32, 48, 3)))
  assert logits.shape == (1, 5) and out["block1"].shape == (1, 7, 16)  # a 2 x 3 grid through Phi's conv
  with pytest.raises(ValueError, match="img_size"):
    model.apply(variables, jnp.ones((1, 48, 48, 3)))


def test_bad_configs():
  for overrides, field in ((dict(skip_blocks=(0, 1)), "skip_blocks"), (dict(skip_blocks=(1, 3)), "skip_blocks"),
                           (dict(skip_blocks=(1, 2)), "skip_blocks"), (dict(skip_blocks=()), "skip_blocks"),
                           (dict(phi_kernel=4), "phi_kernel"), (dict(phi_eca_kernel=2), "phi_eca_kernel"),
                           (dict(class_token=False, global_pool="avg"), "class_token"),
                           (dict(dist_token=True), "class_token"), (dict(scan=True), "scan"),
                           (dict(reduction=dict(kind="tome", r=1)), "reduction"), (dict(img_size=40), "img_size")):
    with pytest.raises(ValueError, match=field):
      small(**overrides)


def test_bfloat16():
  model = small(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  (logits, _), _ = init(model, jnp.ones((2, 32, 32, 3), jnp.bfloat16))
  assert logits.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(logits, np.float32)))


def test_logits_match_official(official_dir):
  torch = pytest.importorskip("torch")
  # a 4 x 4 grid (the official Phi needs a square one)
  model = small(img_size=64, depth=5, skip_blocks=(2, 3), embed_dim=32, phi_kernel=5)
  ref = official_skipat(official_dir, 32, 2, 5, (2, 3), 64, 5)
  params = to_jaxvit(ref.state_dict(), jax.eval_shape(lambda: jaxvit.init_variables(model))["params"])
  images = np.random.RandomState(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.parity_all  # maintainer run: full-size counts against the official code
def test_counts_match_official(official_dir):
  """DeiT-S + SkipAt at 224: the official parameters the forward uses and fvcore's GMACs, equal to jaxvit's."""
  torch = pytest.importorskip("torch")
  fvcore = pytest.importorskip("fvcore.nn")
  from jaxvit.bench.flops import count_macs
  model = jaxvit.create_model("deit_small_skipat_patch16_224")
  ref = official_skipat(official_dir, 384, 6, 12, tuple(model.skip_blocks), 224, 1000)
  unused = sum(p.numel() for i in ref.skip for m in (ref.blocks[i].attn, ref.blocks[i].norm1) for p in m.parameters())
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  assert sum(p.numel() for p in ref.parameters()) - unused == sum(x.size for x in jax.tree.leaves(variables))
  logging.disable(logging.WARNING)
  try:
    flops = fvcore.FlopCountAnalysis(ref, torch.zeros(1, 3, 224, 224)).total()
  finally:
    logging.disable(logging.NOTSET)
  assert flops == count_macs(model, variables, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["total"]
