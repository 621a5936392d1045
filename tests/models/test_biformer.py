"""BiFormer (jaxvit.models.biformer): bi-level routing attention against full attention when every region is
routed and against a per-region loop, other input sizes and the error for maps that do not split into regions,
config errors, bfloat16, a training step of the CI clone, and the model against the official `models/biformer.py`
(`ops/bra_legacy.py`) when its mirror and torch are available."""

import os
import re
import subprocess
import sys

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert.mapping import torch_to_flax_layout
from jaxvit.layers.routing_attention import BiLevelRoutingAttention, from_regions, to_regions
from jaxvit.models.biformer import BiFormer
from fast_jit import jit_fast

OFFICIAL_REPO = "/work/.mirror/rayleizhu+BiFormer/repo"
TINY = dict(num_classes=5, img_size=64, n_win=2, depths=(1, 2, 1, 1), embed_dims=(16, 32, 32, 32),
            mlp_ratios=(3, 3, 3, 3), head_dim=8, topks=(1, 2, 4, -2))


def random_variables(module, *inputs, scale=0.2):
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs)))
  rs = np.random.RandomState(0)
  draw = lambda path, s: (scale * rs.standard_normal(s.shape)).astype(np.float32)
  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  if "batch_stats" in variables:  # BatchNorm running variances must be positive
    variables["batch_stats"] = jax.tree.map(lambda v: 1.0 + np.abs(v), variables["batch_stats"])
  return variables


def test_regions_round_trip():
  x = jnp.arange(2 * 6 * 4 * 3, dtype=jnp.float32).reshape(2, 6, 4, 3)
  r = to_regions(x, 2)
  assert r.shape == (2, 4, 6, 3)
  np.testing.assert_array_equal(np.asarray(r[:, 1]), np.asarray(x[:, :3, 2:].reshape(2, 6, 3)))  # top-right region
  np.testing.assert_array_equal(np.asarray(from_regions(r, 2, 6, 4)), np.asarray(x))


def _naive_bra(params, x, n, topk, heads):
  """Per region: the top-k regions by mean-q . mean-k, then softmax attention to their tokens (scale qk_dim^-1/2),
  plus the 5x5 depthwise conv of v, through wo; numpy loops."""
  b, h, w, c = x.shape
  qkv = x @ params["qkv"]["kernel"] + params["qkv"]["bias"]
  q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
  rh, rw = h // n, w // n
  cells = [(i, j) for i in range(n) for j in range(n)]
  region = lambda t, i, j: t[:, i * rh:(i + 1) * rh, j * rw:(j + 1) * rw].reshape(b, rh * rw, -1)
  kern = params["lepe"]["kernel"][:, :, 0]
  pad = np.pad(v, ((0, 0), (2, 2), (2, 2), (0, 0)))
  out = sum(pad[:, a:a + h, d:d + w] * kern[a, d] for a in range(5) for d in range(5)) + params["lepe"]["bias"]
  d = c // heads
  for bi in range(b):
    qm = np.stack([region(q, i, j)[bi].mean(0) for i, j in cells])
    km = np.stack([region(k, i, j)[bi].mean(0) for i, j in cells])
    aff = qm @ km.T
    for r, (i, j) in enumerate(cells):
      chosen = np.argsort(-aff[r])[:topk]
      ks = np.concatenate([region(k, *cells[s])[bi] for s in chosen])
      vs = np.concatenate([region(v, *cells[s])[bi] for s in chosen])
      qr = region(q, i, j)[bi]
      y = np.zeros((qr.shape[0], c))
      for hd in range(heads):
        logits = qr[:, hd * d:(hd + 1) * d] @ ks[:, hd * d:(hd + 1) * d].T * c ** -0.5
        a = np.exp(logits - logits.max(-1, keepdims=True))
        y[:, hd * d:(hd + 1) * d] = (a / a.sum(-1, keepdims=True)) @ vs[:, hd * d:(hd + 1) * d]
      out[bi, i * rh:(i + 1) * rh, j * rw:(j + 1) * rw] += y.reshape(rh, rw, c)
  return out @ params["wo"]["kernel"] + params["wo"]["bias"]


@pytest.mark.parametrize("topk", [1, 3])
def test_bra_matches_a_per_region_loop(topk):
  layer = BiLevelRoutingAttention(num_heads=2, n_win=2, topk=topk)
  x = np.random.RandomState(1).standard_normal((2, 6, 4, 8)).astype(np.float32)
  params = random_variables(layer, x, scale=0.5)["params"]
  got = jit_fast(lambda p, x: layer.apply({"params": p}, x), params, x)
  expected = _naive_bra(jax.tree.map(np.float64, params), x.astype(np.float64), 2, topk, 2)
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)


def test_bra_routing_all_regions_is_full_attention_and_routing_has_no_gradient():
  x = np.random.RandomState(2).standard_normal((1, 4, 4, 8)).astype(np.float32)
  full, one = BiLevelRoutingAttention(2, n_win=2, topk=4), BiLevelRoutingAttention(2, n_win=1, topk=1)
  params = random_variables(full, x)["params"]
  np.testing.assert_allclose(np.asarray(full.apply({"params": params}, x)),
                             np.asarray(one.apply({"params": params}, x)), atol=1e-5)
  with pytest.raises(ValueError, match="topk"):
    BiLevelRoutingAttention(2, n_win=2, topk=5).apply({"params": params}, x)
  with pytest.raises(ValueError, match="n_win"):
    BiLevelRoutingAttention(2, n_win=3, topk=1).apply({"params": params}, x)


def test_other_input_sizes_and_the_wrong_size_error():
  model = BiFormer(**{**TINY, "img_size": (32, 64), "depths": (1, 1, 1, 1)})
  model.validate()
  images = jnp.ones((1, 32, 64, 3))
  variables = random_variables(model, images)
  logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  assert logits.shape == (1, 5) and out["stage2"].shape == (1, 2, 4, 32) and out["stage3"].shape == (1, 1, 2, 32)
  with pytest.raises(ValueError, match="n_win"):  # unvalidated module: the layer names the field
    model.apply(variables, jnp.ones((1, 48, 48, 3)))


def test_config_errors():
  for size in (336, (224, 448)):
    jaxvit.create_model("biformer_tiny", img_size=size)  # routed maps multiples of 7 (84, 42, 21 at 336)
  with pytest.raises(ValueError, match="img_size"):
    jaxvit.create_model("biformer_tiny", img_size=256)
  for kwargs, field in ((dict(depths=(2, 2, 8)), "depths"), (dict(topks=(1, 4, 50, -2)), "topks"),
                        (dict(topks=(1, 4, 0, -2)), "topks"), (dict(head_dim=48), "head_dim"),
                        (dict(embed_dims=(64, 128)), "embed_dims"), (dict(side_dwconv=4), "side_dwconv"),
                        (dict(drop_path_rate=1.0), "drop_path_rate")):
    with pytest.raises(ValueError, match=field):
      jaxvit.create_model("biformer_tiny", **kwargs)


CLONE = BiFormer(**{**TINY, "img_size": 32, "depths": (1, 1, 1, 1)})


def test_bfloat16():
  model = CLONE.clone(dtype=jnp.bfloat16)
  images = jnp.asarray(np.random.RandomState(3).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = random_variables(model, images)
  logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  assert logits.dtype == jnp.bfloat16 and out["stage2"].dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


@pytest.mark.parity_all  # maintainer run (test_all_models runs forward / backward per code path)
def test_a_training_step():
  """Gradients reach the routed attention; train-mode BatchNorm updates its statistics."""
  model = CLONE.clone(drop_path_rate=0.1)
  images = jnp.asarray(np.random.RandomState(3).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = random_variables(model, images)

  def loss(params, x):
    (logits, _), state = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                     rngs={"drop_path": jax.random.key(1)}, mutable=["batch_stats"])
    return jnp.mean(logits ** 2), state

  grads, state = jit_fast(jax.grad(loss, has_aux=True), variables["params"], images)
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert float(jnp.abs(grads["stages_0_0"]["attn"]["qkv"]["kernel"]).sum()) > 0  # through the routed attention
  assert not np.allclose(state["batch_stats"]["norm"]["mean"], variables["batch_stats"]["norm"]["mean"])


def _official_module(tmp_path):
  """The official `models/biformer.py` + `ops/bra_legacy.py` from the local mirror (fairscale stubbed, timm's moved
  layers imported from their new place); skips when the mirror, torch, timm or einops is missing."""
  for module in ("torch", "timm", "einops"):
    pytest.importorskip(module)
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of rayleizhu/BiFormer")
  for path in ("models/biformer.py", "models/_common.py", "ops/bra_legacy.py"):
    source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"HEAD:{path}"], capture_output=True,
                            text=True, check=True).stdout
    source = source.replace("from fairscale.nn.checkpoint import checkpoint_wrapper\n", "checkpoint_wrapper = None\n")
    source = source.replace("from timm.models.layers import", "from timm.layers import")
    source = source.replace("from timm.models import register_model\n", "register_model = lambda f: f\n")
    source = source.replace("from ._common import", "from official_biformer_common import")
    source = source.replace("from ops.bra_legacy import", "from official_bra_legacy import")
    name = {"models/biformer.py": "official_biformer", "models/_common.py": "official_biformer_common",
            "ops/bra_legacy.py": "official_bra_legacy"}[path]
    (tmp_path / f"{name}.py").write_text(source)
  sys.path.insert(0, str(tmp_path))
  try:
    import official_biformer
  finally:
    sys.path.remove(str(tmp_path))
  return official_biformer


def _official_name(path, state):
  """jaxvit variable path -> official state_dict key."""
  name = re.sub(r"_(\d+)", r".\1", path).replace("mlp/fc1", "mlp/0").replace("mlp/fc2", "mlp/3")
  *mods, leaf = name.split("/")
  key = ".".join(mods + [{"kernel": "weight", "scale": "weight", "mean": "running_mean",
                          "var": "running_var"}.get(leaf, leaf)])
  return key if key in state else key.replace("attn.qkv.", "attn.qkv.qkv.")


def test_matches_the_official_model(tmp_path):
  """Random official weights (all parameters and BatchNorm statistics perturbed) mapped by name give the same
  logits."""
  official = _official_module(tmp_path)
  import torch
  torch.manual_seed(0)
  reference = official.BiFormer(depth=[1, 2, 1, 1], embed_dim=[16, 32, 32, 32], mlp_ratios=[3, 3, 3, 3], n_win=2,
                                kv_downsample_mode="identity", kv_per_wins=[-1] * 4, topks=[1, 2, 4, -2],
                                side_dwconv=5, before_attn_dwconv=3, qk_dims=[16, 32, 32, 32], head_dim=8,
                                num_classes=5).eval()
  with torch.no_grad():
    for name, p in reference.state_dict().items():
      if p.is_floating_point():
        p.add_(0.1 * torch.randn_like(p)).abs_() if "running_var" in name else p.add_(0.1 * torch.randn_like(p))
  state = {k: v.numpy() for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
  model = BiFormer(**TINY)
  images = np.random.RandomState(4).standard_normal((2, 64, 64, 3)).astype(np.float32)
  flat = flax.traverse_util.flatten_dict(random_variables(model, images), sep="/")
  names = {p: _official_name(p.split("/", 1)[1], state) for p in flat}
  assert sorted(names.values()) == sorted(state)
  variables = flax.traverse_util.unflatten_dict(
      {p: torch_to_flax_layout(state[names[p]], v.shape) if p.endswith("kernel") else state[names[p]].reshape(v.shape)
       for p, v in flat.items()}, sep="/")
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
