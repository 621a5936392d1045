"""AS-MLP: the axial shift against the official reference shift, logits, parameter count and fvcore GMACs against
the official PyTorch model (from the local mirror, its CUDA `Shift` replaced by the repo's own `torch_shift`;
skipped without it), other input sizes, bad configs and bfloat16."""

import os
import subprocess
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.layers.axial_shift import axial_offsets, axial_shift
from published import PUBLISHED

OFFICIAL_REPO = "/work/.mirror/svip-lab+AS-MLP/repo"

TORCH_SHIFT_MODULE = '''
class Shift(nn.Module):
    def __init__(self, kernel_size, dim):
        super().__init__()
        self.kernel_size, self.dim = kernel_size, dim

    def forward(self, x):
        return torch_shift(x, self.kernel_size, self.dim)
'''


@pytest.fixture(scope="module")
def official():
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of svip-lab/AS-MLP")
  show = lambda path: subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"HEAD:{path}"],  # noqa: E731
                                     capture_output=True, text=True, check=True).stdout
  shift_source = show("models/shift_cuda.py")
  torch_shift = shift_source[shift_source.index("def torch_shift"):]  # the repo's CPU reference of its CUDA kernel
  source = show("models/as_mlp.py").replace("from .shift_cuda import Shift\n", "")
  source = source.replace("from timm.models.layers import", "from timm.layers import")
  source = source.replace("class Mlp(", torch_shift + TORCH_SHIFT_MODULE + "\n\nclass Mlp(", 1)
  module = types.ModuleType("as_mlp_official")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    exec(compile(source, "as_mlp.py", "exec"), module.__dict__)
  return torch, module


def _torch_name(part):
  """`layers_1_blocks_0` -> `layers.1.blocks.0`, `patch_embed_proj` -> `patch_embed.proj`."""
  if part.startswith("layers_"):
    return ".".join(part.split("_", 3)[:2] + ["_".join(part.split("_")[2:])])
  return {"patch_embed_proj": "patch_embed.proj", "patch_embed_norm": "patch_embed.norm"}.get(part, part)


def to_jaxvit(state_dict, variables):
  out = {}
  for path, target in flatten_dict(variables["params"]).items():
    parts = [_torch_name(p) for p in path[:-1]]
    parts = [p.replace("blocks_", "blocks.") for p in parts]
    leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
    t = state_dict[".".join(parts + [leaf])].numpy()
    if path[-1] == "kernel":
      t = t.transpose(2, 3, 1, 0) if target.ndim == 4 else t.reshape(t.shape[:2]).T
    out[path] = jnp.asarray(t)
  return {"params": unflatten_dict(out)}


@pytest.mark.parametrize("channels", [10, 12, 6])  # 12: groups of 3, the last of 0 .. 6: three groups of 2
def test_axial_shift_matches_the_official_reference(official, channels):
  torch, module = official
  x = np.random.RandomState(0).standard_normal((2, 6, 7, channels)).astype(np.float32)
  for axis, dim in ((1, 2), (2, 3)):
    expected = module.torch_shift(torch.from_numpy(x.transpose(0, 3, 1, 2)), 5, dim).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(axial_shift(jnp.asarray(x), 5, axis), expected)


def test_axial_offsets():
  assert axial_offsets(10, 5) == [2, 2, 1, 1, 0, 0, -1, -1, -2, -2]  # group g reads g - 2 lines back
  assert axial_offsets(6, 5) == [2, 2, 1, 1, 0, 0]


def test_logits_match_official(official):
  torch, module = official
  model = jaxvit.create_model("as_mlp_tiny", img_size=64)
  torch.manual_seed(0)
  ref = module.AS_MLP(img_size=64, depths=[2, 2, 6, 2]).eval()
  with torch.no_grad():  # random, non-trivial GroupNorms, biases and head
    for t in ref.state_dict().values():
      if t.dtype.is_floating_point:
        t.add_((0.1 if t.ndim == 1 else 0.01) * torch.randn_like(t))
  images = np.random.RandomState(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  variables = to_jaxvit(ref.state_dict(), jax.eval_shape(lambda: jaxvit.init_variables(model)))
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert np.abs(expected[0] - expected[1]).max() > 1e-2
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


CONFIGS = {"as_mlp_tiny": (96, [2, 2, 6, 2]), "as_mlp_small": (96, [2, 2, 18, 2]), "as_mlp_base": (128, [2, 2, 18, 2])}


@pytest.mark.parity_all
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_params_and_gmacs_match_official(official, name):
  """fvcore (convs, linear, GroupNorm at 5 per element; the shifts are free) and sum(p.numel()) at 224."""
  from fvcore.nn import FlopCountAnalysis
  torch, module = official
  embed_dim, depths = CONFIGS[name]
  ref = module.AS_MLP(embed_dim=embed_dim, depths=depths).eval()
  flops = FlopCountAnalysis(ref, torch.zeros(1, 3, 224, 224)).unsupported_ops_warnings(False)
  params = sum(p.numel() for p in ref.parameters())
  model = jaxvit.create_model(name)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  assert jaxvit.utils.count_params(variables["params"]) == params
  ours = count_macs(model, variables, jnp.zeros((1, 224, 224, 3)))["total"]
  assert round(ours / 1e9, 2) == round(flops.total() / 1e9, 2) == PUBLISHED[name][1]
  assert round(params / 1e6, 2) == PUBLISHED[name][0]


def test_other_sizes_train_backward_and_bfloat16():
  model = jaxvit.create_model("as_mlp_tiny", img_size=32, depths=(1, 1, 1, 1), embed_dim=10, num_classes=7, drop_path_rate=0.1,
                              drop_rate=0.1)
  variables = jaxvit.init_variables(model)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  rngs = {"drop_path": jax.random.key(2), "dropout": jax.random.key(3)}
  logits, out = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rngs=r))(variables, x, rngs)
  assert logits.shape == (2, 7) and out["stage3"].shape == (2, 1, 1, 80)
  assert jax.jit(model.apply)(variables, jnp.zeros((1, 64, 96, 3)))[1]["stage3"].shape == (1, 2, 3, 80)
  with pytest.raises(ValueError, match="input 40x40; accepted: sides that are multiples of 32"):
    model.apply(variables, jnp.zeros((1, 40, 40, 3)))
  grads = jax.jit(jax.grad(lambda v: (model.apply(v, x)[1]["pre_logits"] ** 2).sum()))(variables)  # the head starts at zero
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads["params"]["layers_0_blocks_0"]["axial_shift"]["conv2_1"]["kernel"]).max() > 0
  half = model.clone(dtype=jnp.bfloat16)
  low = jax.jit(half.apply)(variables, x.astype(jnp.bfloat16))[0]
  full = jax.jit(model.apply)(variables, x)[0]
  assert low.dtype == jnp.bfloat16
  assert np.abs(np.asarray(low, np.float32) - full).max() < 0.1 * np.abs(full).max() + 0.05


def test_bad_configs():
  with pytest.raises(ValueError, match="shift_size=4; accepted: odd integers >= 1"):
    jaxvit.create_model("as_mlp_tiny", shift_size=4)
  with pytest.raises(ValueError, match="img_size=100; accepted: multiples of 32"):
    jaxvit.create_model("as_mlp_tiny", img_size=100)
  with pytest.raises(ValueError, match=r"depths=\(2, 0, 6, 2\); accepted: one or more stages"):
    jaxvit.create_model("as_mlp_tiny", depths=(2, 0, 6, 2))
