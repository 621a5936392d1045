"""CvT (jaxvit.models.cvt): logits against the official `cls_cvt.py` in eval mode (when its mirror and torch are
available), official parameter counts, other input sizes, config errors, bfloat16, BatchNorm statistics in
training."""

import os
import re
import subprocess
import sys
from functools import partial

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert.mapping import torch_to_flax_layout
from jaxvit.models.cvt import CvT
from fast_jit import jit_fast

OFFICIAL_REPO = "/work/.mirror/microsoft+CvT/repo"
TINY = dict(embed_dims=(8, 16, 24), depths=(1, 2, 1), num_heads=(1, 2, 3))


def shapes(model, images):
  return nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), images)))


def random_variables(model, images, scale=0.2):
  rs = np.random.RandomState(0)
  flat = flax.traverse_util.flatten_dict(shapes(model, images), sep="/")
  return flax.traverse_util.unflatten_dict(
      {p: (np.abs(scale * rs.standard_normal(s.shape)) + (1.0 if p.endswith("var") else 0.0) if p.endswith("var")
           else scale * rs.standard_normal(s.shape)).astype(np.float32) for p, s in flat.items()}, sep="/")


@pytest.mark.parametrize("name,params_m", [("cvt_13_224", 19.99748),
                                           pytest.param("cvt_21_384", 31.622696, marks=pytest.mark.slow),
                                           pytest.param("cvt_w24_384", 277.196392, marks=pytest.mark.slow)])
def test_official_parameter_counts(name, params_m):
  """sum(p.numel()) of the official model (printed by its code for the yaml specs)."""
  model = jaxvit.create_model(name)
  v = shapes(model, jnp.zeros((1, 64, 64, 3)))
  n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v["params"]))
  assert n == round(params_m * 1e6)
  assert jax.tree.leaves(v["batch_stats"])  # BatchNorm running statistics of the conv projections


def test_other_input_sizes_and_outputs():
  model = CvT(num_classes=3, **TINY)
  for size in ((40, 56),):
    images = jnp.ones((2, *size, 3))
    variables = random_variables(model, images)
    logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    assert logits.shape == (2, 3)
    assert out["stage0"].shape == (2, h, w, 8) and out["stage2"].shape == (2, -(-h // 4), -(-w // 4), 24)
  with pytest.raises(ValueError, match="shrink"):
    model.apply(variables, jnp.ones((1, 2, 2, 3)))


def test_config_errors():
  for kwargs, field in ((dict(depths=(1, 2)), "depths"), (dict(num_heads=(1, 5, 6)), "num_heads"),
                        (dict(depths=(1, 0, 1)), "depths"), (dict(drop_path_rate=1.0), "drop_path_rate"),
                        (dict(embed_dims=()), "embed_dims")):
    with pytest.raises(ValueError, match=field):
      jaxvit.create_model("cvt_13_224", **kwargs).validate()


def test_bfloat16_and_training_updates_batch_stats():
  model = CvT(num_classes=3, dtype=jnp.bfloat16, **TINY)
  images = jnp.asarray(np.random.RandomState(1).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = random_variables(model, images)
  logits, _ = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))

  model = CvT(num_classes=3, **TINY)

  def loss(params, stats, x):
    (logits, _), new = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": jax.random.key(1), "drop_path": jax.random.key(2)})
    return jnp.mean(logits ** 2), new["batch_stats"]

  grads, new_stats = jit_fast(lambda p, s, x: jax.grad(loss, has_aux=True)(p, s, x), variables["params"],
                         variables["batch_stats"], images)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["stage0_blocks_0"]["attn"]["conv_proj_k"]["conv"]["kernel"]).sum()) > 0
  old = variables["batch_stats"]["stage1_blocks_0"]["attn"]["conv_proj_v"]["bn"]["mean"]
  assert not np.allclose(new_stats["stage1_blocks_0"]["attn"]["conv_proj_v"]["bn"]["mean"], old)


def _official_module(tmp_path):
  """The official `cls_cvt.py` from the mirror (stubs: `torch._six` -> `collections.abc`, timm's new layer path,
  no registry); skips when torch, timm, einops or the mirror are missing."""
  pytest.importorskip("torch")
  pytest.importorskip("timm")
  pytest.importorskip("einops")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of microsoft/CvT")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:lib/models/cls_cvt.py"],
                          capture_output=True, text=True, check=True).stdout
  source = source.replace("from torch._six import container_abcs", "import collections.abc as container_abcs")
  source = source.replace("from timm.models.layers import", "from timm.layers import")
  source = source.replace("from .registry import register_model", "register_model = lambda f: f")
  (tmp_path / "official_cvt.py").write_text(source)
  sys.path.insert(0, str(tmp_path))
  try:
    import official_cvt
  finally:
    sys.path.remove(str(tmp_path))
  return official_cvt


def _official_name(path):
  """jaxvit variable path -> official state_dict key."""
  name = re.sub(r"stage(\d+)_blocks_(\d+)", r"stage\1.blocks.\2", path)
  name = re.sub(r"stage(\d+)_(patch_embed|cls_token)", r"stage\1.\2", name)
  *mods, leaf = name.split("/")
  leaf = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}.get(leaf, leaf)
  return ".".join(mods + [leaf])


def test_matches_the_official_model(tmp_path):
  """Random official weights and BatchNorm statistics (perturbed) mapped by name give the same eval logits."""
  official = _official_module(tmp_path)
  import torch
  torch.manual_seed(0)
  spec = dict(NUM_STAGES=3, PATCH_SIZE=[7, 3, 3], PATCH_STRIDE=[4, 2, 2], PATCH_PADDING=[2, 1, 1],
              DIM_EMBED=list(TINY["embed_dims"]), NUM_HEADS=list(TINY["num_heads"]), DEPTH=list(TINY["depths"]),
              MLP_RATIO=[4.0] * 3, ATTN_DROP_RATE=[0.0] * 3, DROP_RATE=[0.0] * 3, DROP_PATH_RATE=[0.0, 0.0, 0.1],
              QKV_BIAS=[True] * 3, CLS_TOKEN=[False, False, True], QKV_PROJ_METHOD=["dw_bn"] * 3, KERNEL_QKV=[3] * 3,
              PADDING_KV=[1] * 3, STRIDE_KV=[2] * 3, PADDING_Q=[1] * 3, STRIDE_Q=[1] * 3)
  reference = official.ConvolutionalVisionTransformer(num_classes=5, act_layer=official.QuickGELU,
                                                      norm_layer=partial(official.LayerNorm, eps=1e-5), spec=spec)
  reference.eval()
  with torch.no_grad():
    for p in reference.parameters():
      p.add_(0.1 * torch.randn_like(p))
    for name, buf in reference.named_buffers():
      if name.endswith("running_mean"):
        buf.copy_(0.1 * torch.randn_like(buf))
      elif name.endswith("running_var"):
        buf.copy_(0.5 + torch.rand_like(buf))
  state = {k: v.numpy() for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
  model = CvT(num_classes=5, **TINY)
  images = np.random.RandomState(4).standard_normal((2, 36, 44, 3)).astype(np.float32)  # odd stage maps
  flat = flax.traverse_util.flatten_dict(shapes(model, jnp.asarray(images)), sep="/")
  assert sorted(_official_name(p.split("/", 1)[1]) for p in flat) == sorted(state)

  def convert(path, value):
    key = _official_name(path.split("/", 1)[1])
    return torch_to_flax_layout(state[key], value.shape) if path.endswith("kernel") else state[key].reshape(value.shape)

  variables = flax.traverse_util.unflatten_dict({p: convert(p, v) for p, v in flat.items()}, sep="/")
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
