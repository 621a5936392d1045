"""T2T-ViT: the soft split against a naive unfold, the Performer's frozen features, other input sizes, bad configs,
bfloat16, and (when the official code is at hand) logits against the official PyTorch model."""

import contextlib
import importlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

import jaxvit
from jaxvit.layers.tokens_to_token import TokenPerformer, soft_split
from jaxvit.models.t2t_vit import sinusoid_table
from jaxvit.train.optim import decay_mask

# yitu-opensource/T2T-ViT: a local mirror (its `models/` is extracted for the test) or a checkout in T2T_VIT_OFFICIAL
OFFICIAL_REPO = "/work/.mirror/yitu-opensource+T2T-ViT/repo"


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
  if os.environ.get("T2T_VIT_OFFICIAL"):
    return os.environ["T2T_VIT_OFFICIAL"]
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("official T2T-ViT code not found (no local mirror; set T2T_VIT_OFFICIAL to a checkout)")
  out = tmp_path_factory.mktemp("t2t_official")
  archive = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "archive", "HEAD", "models"], capture_output=True,
                           check=True).stdout
  tarfile.open(fileobj=io.BytesIO(archive)).extractall(out, filter="data")
  return str(out)


def naive_unfold(x, k, s, p):
  """torch's nn.Unfold by loops on NHWC numpy: [B, h, w, C * k * k], channel-major."""
  b, hh, ww, c = x.shape
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  h, w = (hh + 2 * p - k) // s + 1, (ww + 2 * p - k) // s + 1
  out = np.zeros((b, h, w, c * k * k), x.dtype)
  for i in range(h):
    for j in range(w):
      for ch in range(c):
        for a in range(k):
          for e in range(k):
            out[:, i, j, ch * k * k + a * k + e] = xp[:, i * s + a, j * s + e, ch]
  return out


@pytest.mark.parametrize("k,s,p,shape", [(7, 4, 2, (2, 16, 20, 3)), (3, 2, 1, (1, 8, 6, 5)), (3, 2, 1, (1, 7, 7, 2))])
def test_soft_split_equals_naive_unfold(k, s, p, shape):
  x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(jax.jit(soft_split, static_argnums=(1, 2, 3))(x, k, s, p)),
                                naive_unfold(x, k, s, p))


def test_sinusoid_table():
  t = sinusoid_table(5, 6)[0]
  assert t.shape == (5, 6)
  np.testing.assert_allclose(t[3, 2], np.sin(3 / 10000 ** (2 / 6)), rtol=1e-6)
  np.testing.assert_allclose(t[3, 5], np.cos(3 / 10000 ** (4 / 6)), rtol=1e-6)


def test_performer_features_orthogonal_and_frozen():
  layer = TokenPerformer(16, kernel_ratio=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 10, 27))
  params = jax.jit(lambda: layer.init(jax.random.key(1), x, train=False))()["params"]
  w = np.asarray(jax.tree.leaves(params["random_features"])[0])
  assert w.shape == (8, 16)
  np.testing.assert_allclose(w @ w.T, 8 * np.eye(8), atol=1e-4)  # orthogonal rows times sqrt(m)
  grads = jax.jit(jax.grad(lambda p: layer.apply({"params": p}, x, train=False).sum()))(params)
  assert not np.any(np.asarray(jax.tree.leaves(grads["random_features"])[0]))
  assert np.any(np.asarray(jax.tree.leaves(grads["kqv"])[0]))
  assert not decay_mask(params)["random_features"]  # frozen: decoupled weight decay must not shrink it either


def _run(model, dtype=jnp.float32):
  """`((logits, out), variables)` of init and apply in one compile."""
  images = jax.random.normal(jax.random.key(0), (2, model.img_size, model.img_size, 3), dtype)
  return jax.jit(lambda x: model.init_with_output(jax.random.key(1), x))(images)


@pytest.mark.parametrize("tokens_type", ["performer", "transformer"])
def test_other_size_and_outputs(tokens_type):
  model = jaxvit.create_model("t2t_vit_7", tokens_type=tokens_type, img_size=48, depth=1, num_classes=3)
  (logits, out), variables = _run(model)
  assert logits.shape == (2, 3) and out["t2t_tokens"].shape == (2, 9, 256) and out["pre_logits"].shape == (2, 256)
  assert jax.tree.leaves(variables["params"]["pos_embed"])[0].shape == (1, 10, 256)
  with pytest.raises(ValueError, match="img_size=48"):
    jax.eval_shape(lambda x: model.apply(variables, x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


def test_bad_configs():
  for overrides, field in ((dict(img_size=40), "img_size"), (dict(tokens_type="convolution"), "tokens_type"),
                           (dict(num_heads=5), "num_heads"), (dict(t2t_drop_rate=1.0), "t2t_drop_rate")):
    with pytest.raises(ValueError, match=field):
      jaxvit.create_model("t2t_vit_7", **overrides).validate()


def test_bfloat16():
  model = jaxvit.create_model("t2t_vit_7", img_size=32, depth=1, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  (logits, _), _ = _run(model, jnp.bfloat16)
  assert logits.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(logits, np.float32)))


def to_jaxvit(state_dict, params):
  """Official PyTorch state dict -> jaxvit params (the shapes of `params`)."""
  flat = {"/".join(k): v for k, v in flatten_dict(params).items()}
  new = {}
  for key, target in flat.items():
    parts = key.split("/")
    if parts[0] == "encoder":  # encoder/blocks_i/... -> blocks.i....
      parts = ["blocks", parts[1].split("_")[1]] + parts[2:]
    if parts[:1] == ["tokens_to_token"] and len(parts) > 2 and parts[2] in ("qkv", "proj") and \
        f"tokens_to_token.{parts[1]}.attn.qkv.weight" in state_dict:
      parts.insert(2, "attn")  # Token_transformer keeps its attention in `attn`
    if parts[-2:-1] in (["fc1"], ["fc2"]) and f"tokens_to_token.{parts[1]}.mlp.0.weight" in state_dict:
      parts[-2] = "0" if parts[-2] == "fc1" else "2"  # Token_performer's nn.Sequential MLP
    leaf = parts[-1]
    t = state_dict[".".join(parts[:-1] + [{"kernel": "weight", "scale": "weight", "random_features": "w"}.get(leaf, leaf)])].numpy()
    new[key] = (t.T if leaf == "kernel" else t).reshape(target.shape)  # fused qkv / proj kernels: [in, out] split
  return unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in new.items()})


@pytest.mark.parametrize("name", ["t2t_vit_7", "t2t_vit_t_14"])
def test_logits_match_official(name, official_dir):
  torch = pytest.importorskip("torch")
  package = "t2t_vit_official_models"  # its own package name: `models` would clash with tests/models
  if package not in sys.modules:
    spec = importlib.util.spec_from_file_location(package, os.path.join(official_dir, "models", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(official_dir, "models")])
    sys.modules[package] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[package])
  with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.simplefilter("ignore")
    official = importlib.import_module(f"{package}.t2t_vit")
    model = jaxvit.create_model(name, depth=2)
    torch.manual_seed(0)
    ref = official.T2T_ViT(tokens_type=model.tokens_type, embed_dim=model.embed_dim, depth=2,
                           num_heads=model.num_heads, mlp_ratio=model.mlp_ratio).eval()
  with torch.no_grad():  # random, non-trivial norms and head
    for p in ref.parameters():
      if p.requires_grad:
        p.add_(0.02 * torch.randn_like(p))
  images = np.random.RandomState(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  params = to_jaxvit(ref.state_dict(), jax.eval_shape(lambda: jaxvit.init_variables(model))["params"])
  logits, _ = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
