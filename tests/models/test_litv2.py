"""LITv2 (jaxvit.models.litv2): HiLo attention against plain and windowed attention, the deformable conv against a
plain conv (zero offsets) and torchvision's `deform_conv2d`, other input sizes and the wrong-size error, config
errors, bfloat16, a training step of the CI clone, and the model against the official `classification/models`
(the compiled DCN extension replaced by a pure-torch bilinear-sampling `DeformConv2dPack`) when its mirror and
torch are available."""

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
from jaxvit.layers.deform_conv import DeformConv2d
from jaxvit.layers.hilo_attention import HiLo
from jaxvit.models.litv2 import LITv2
from fast_jit import jit_fast

OFFICIAL_REPO = "/work/.mirror/ziplab+LITv2/repo"
TINY = dict(num_classes=5, img_size=64, embed_dim=8, depths=(1, 2, 2, 1), num_heads=(1, 2, 4, 4))
CLONE = LITv2(**{**TINY, "img_size": 32, "depths": (1, 1, 1, 1)})


def random_variables(module, *inputs, scale=0.2):
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs)))
  rs = np.random.RandomState(0)
  variables = jax.tree.map(lambda s: (scale * rs.standard_normal(s.shape)).astype(np.float32), shapes)
  if "batch_stats" in variables:  # BatchNorm running variances must be positive
    variables["batch_stats"] = jax.tree.map(lambda v: 1.0 + np.abs(v), variables["batch_stats"])
  return variables


def _attention(q, k, v):
  logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
  a = np.exp(logits - logits.max(-1, keepdims=True))
  return (a / a.sum(-1, keepdims=True)) @ v


def test_hilo_against_numpy():
  """Hi-Fi heads: attention inside 2x2 windows; Lo-Fi heads: attention to the 2x2-average-pooled map; concatenated
  Hi-Fi first. window_size=1: one attention over all tokens in the Lo-Fi branch."""
  x = np.random.RandomState(1).standard_normal((1, 4, 6, 8)).astype(np.float32)
  layer = HiLo(num_heads=4, window_size=2, alpha=0.5)
  p = jax.tree.map(np.float64, random_variables(layer, x, scale=0.5)["params"])
  got = np.asarray(layer.apply({"params": jax.tree.map(np.float32, p)}, x))
  lin = lambda t, name: t @ p[name]["kernel"] + p[name]["bias"]
  xd = x.astype(np.float64)[0]
  hi = np.zeros((4, 6, 4))
  for i in range(0, 4, 2):
    for j in range(0, 6, 2):
      qkv = lin(xd[i:i + 2, j:j + 2].reshape(4, 8), "h_qkv").reshape(4, 3, 2, 2)
      y = np.concatenate([_attention(qkv[:, 0, hd], qkv[:, 1, hd], qkv[:, 2, hd]) for hd in range(2)], -1)
      hi[i:i + 2, j:j + 2] = y.reshape(2, 2, 4)
  q = lin(xd.reshape(24, 8), "l_q").reshape(24, 2, 2)
  kv = lin(xd.reshape(2, 2, 3, 2, 8).mean((1, 3)).reshape(6, 8), "l_kv").reshape(6, 2, 2, 2)
  lo = np.concatenate([_attention(q[:, hd], kv[:, 0, hd], kv[:, 1, hd]) for hd in range(2)], -1).reshape(4, 6, 4)
  expected = np.concatenate([lin(hi, "h_proj"), lin(lo, "l_proj")], -1)
  np.testing.assert_allclose(got[0], expected, atol=1e-4)
  assert HiLo(12, 2, 0.9).head_split() == (2, 10) and HiLo(24, 1, 0.9).head_split() == (0, 24)
  with pytest.raises(ValueError, match="window_size"):
    layer.apply({"params": jax.tree.map(np.float32, p)}, x[:, :3])


def test_deform_conv_with_zero_offsets_is_a_conv_and_matches_torchvision():
  x = np.random.RandomState(2).standard_normal((2, 6, 8, 4)).astype(np.float32)
  layer = DeformConv2d(6, kernel_size=2, stride=2)
  params = random_variables(layer, x)["params"]
  zero = jax.tree.map(np.zeros_like, params["conv_offset"])
  got = layer.apply({"params": {**params, "conv_offset": zero}}, x)
  conv = jax.lax.conv_general_dilated(x, params["kernel"], (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(got), np.asarray(conv + params["bias"]), atol=1e-5)
  torch = pytest.importorskip("torch")
  ops = pytest.importorskip("torchvision.ops")
  layer = DeformConv2d(6, kernel_size=3, stride=1, padding=1)
  params3 = random_variables(layer, x, scale=1.0)["params"]
  got = layer.apply({"params": params3}, x)
  offset = jax.lax.conv_general_dilated(x, params3["conv_offset"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + params3["conv_offset"]["bias"]
  assert float(jnp.abs(offset).max()) > 1.5  # some taps sample outside the map
  t = lambda a, perm: torch.from_numpy(np.asarray(a).transpose(perm).copy())
  expected = ops.deform_conv2d(t(x, (0, 3, 1, 2)), t(offset, (0, 3, 1, 2)), t(params3["kernel"], (3, 2, 0, 1)),
                               torch.from_numpy(np.asarray(params3["bias"])), padding=1)
  np.testing.assert_allclose(np.asarray(got), expected.numpy().transpose(0, 2, 3, 1), atol=1e-4)


def test_other_input_sizes():
  model = CLONE.clone(img_size=(32, 64))
  model.validate()
  images = jnp.ones((1, 32, 64, 3))
  variables = random_variables(model, images)
  logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  assert logits.shape == (1, 5) and out["stage2"].shape == (1, 2, 4, 32) and out["stage3"].shape == (1, 1, 2, 64)


def test_config_errors():
  jaxvit.create_model("litv2_small", img_size=(256, 320))
  for kwargs, field in ((dict(img_size=240), "img_size"), (dict(num_heads=(3, 6, 12)), "num_heads"),
                        (dict(num_heads=(3, 6, 12, 25)), "num_heads"), (dict(local_ws=(0, 0, -1, 1)), "local_ws"),
                        (dict(alpha=1.5), "alpha"), (dict(depths=(2, 0, 6, 2)), "depths"),
                        (dict(drop_path_rate=1.0), "drop_path_rate")):
    with pytest.raises(ValueError, match=field):
      jaxvit.create_model("litv2_small", **kwargs)


def test_bfloat16():
  model = CLONE.clone(dtype=jnp.bfloat16)
  images = jnp.asarray(np.random.RandomState(3).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = random_variables(model, images)
  logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  assert logits.dtype == jnp.bfloat16 and out["stage2"].dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


@pytest.mark.parity_all  # maintainer run (test_all_models runs forward / backward per code path)
def test_a_training_step():
  """Gradients reach HiLo and the deformable offsets; train-mode BatchNorm (DTM) updates its statistics."""
  model = CLONE.clone(drop_path_rate=0.1)
  images = jnp.asarray(np.random.RandomState(3).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = random_variables(model, images)

  def loss(params, x):
    (logits, _), state = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                     rngs={"drop_path": jax.random.key(1)}, mutable=["batch_stats"])
    return jnp.mean(logits ** 2), state

  grads, state = jit_fast(jax.grad(loss, has_aux=True), variables["params"], images)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["layers_2"]["blocks_0"]["attn"]["h_qkv"]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads["layers_0"]["downsample"]["dconv"]["conv_offset"]["kernel"]).sum()) > 0
  bn = ("layers_0", "downsample", "norm_layer", "mean")
  assert not np.allclose(state["batch_stats"][bn[0]][bn[1]][bn[2]][bn[3]],
                         variables["batch_stats"][bn[0]][bn[1]][bn[2]][bn[3]])


_DCN_STUB = '''
import torch, torch.nn as nn


class DeformConv2dPack(nn.Module):
    """The DCN extension's module with the same parameters, computed by torchvision's deform_conv2d."""
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, **kw):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * 0.1)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size, stride, padding)

    def forward(self, x):
        from torchvision.ops import deform_conv2d
        return deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, stride=self.stride, padding=self.padding)
'''


def _official_module(tmp_path):
  """The official `classification/models` package from the local mirror, its compiled DCN extension replaced by
  `_DCN_STUB`; skips when the mirror, torch, torchvision or timm is missing."""
  for module in ("torch", "torchvision", "timm"):
    pytest.importorskip(module)
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of ziplab/LITv2")
  package = tmp_path / "official_litv2"
  package.mkdir()
  (package / "__init__.py").write_text("")
  for name in ("litv2", "patch_embed", "layers", "blocks", "attentions"):
    source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"HEAD:classification/models/{name}.py"],
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from timm.models.layers import", "from timm.layers import")
    source = source.replace("from models.", "from official_litv2.")
    source = source.replace("from mm_modules.DCN.modules.deform_conv2d import", "from official_litv2.dcn import")
    (package / f"{name}.py").write_text(source)
  (package / "dcn.py").write_text(_DCN_STUB)
  sys.path.insert(0, str(tmp_path))
  try:
    from official_litv2 import litv2
  finally:
    sys.path.remove(str(tmp_path))
  return litv2


def _official_name(path):
  """jaxvit variable path -> official state_dict key."""
  name = re.sub(r"_(\d+)", r".\1", path).replace("mlp/dwconv", "mlp/dwconv/dwconv")
  *mods, leaf = name.split("/")
  return ".".join(mods + [{"kernel": "weight", "scale": "weight", "mean": "running_mean",
                           "var": "running_var"}.get(leaf, leaf)])


def test_matches_the_official_model(tmp_path):
  """Random official weights (all parameters, offsets and BatchNorm statistics perturbed) mapped by name give the
  same logits."""
  official = _official_module(tmp_path)
  import torch
  torch.manual_seed(0)
  reference = official.LITv2(img_size=64, embed_dim=8, depths=[1, 2, 2, 1], num_heads=[1, 2, 4, 4], num_classes=5,
                             alpha=0.9, local_ws=[0, 0, 2, 1], has_msa=[0, 0, 1, 1]).eval()
  with torch.no_grad():
    for name, p in reference.state_dict().items():
      if p.is_floating_point():
        p.add_(0.1 * torch.randn_like(p)).abs_() if "running_var" in name else p.add_(0.1 * torch.randn_like(p))
  state = {k: v.numpy() for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
  model = LITv2(**{**TINY, "alpha": 0.9})
  images = np.random.RandomState(4).standard_normal((2, 64, 64, 3)).astype(np.float32)
  flat = flax.traverse_util.flatten_dict(random_variables(model, images), sep="/")
  names = {p: _official_name(p.split("/", 1)[1]) for p in flat}
  assert sorted(names.values()) == sorted(state)
  variables = flax.traverse_util.unflatten_dict(
      {p: torch_to_flax_layout(state[names[p]], v.shape) if p.endswith("kernel") else state[names[p]].reshape(v.shape)
       for p, v in flat.items()}, sep="/")
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
