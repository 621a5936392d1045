"""Hire-MLP: logits against the official PyTorch model (from the local mirror; skipped without it), the region
rearrangement and its inverse, other input sizes, bad configs and bfloat16."""

import contextlib
import io
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
from jaxvit.layers.hire_mixer import _regions, _unregions
from fast_jit import jit_fast

OFFICIAL_REPO = "/work/.mirror/ggjy+Hire-Wave-MLP.pytorch/repo"


@pytest.fixture(scope="module")
def official():
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of ggjy/Hire-Wave-MLP.pytorch")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:mlp_based/hire_mlp.py"],
                          capture_output=True, text=True, check=True).stdout
  source = source.replace("@register_model\n", "")  # keep timm's registry untouched
  source = source.replace("from timm.models.layers.helpers import to_2tuple", "from timm.layers import to_2tuple")
  module = types.ModuleType("hire_mlp_official")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    exec(compile(source, "hire_mlp.py", "exec"), module.__dict__)
  return torch, module


def to_jaxvit(state_dict, variables):
  """Official state dict -> jaxvit variables (`network.2.0.attn.mlp_h1.weight` -> `network_2_0/attn/mlp_h1/kernel`)."""
  out = {}
  for collection, tree in variables.items():
    new = {}
    for path, target in flatten_dict(tree).items():
      parts = [p.replace("_", ".") if p.startswith("network_") else p for p in path[:-1]]
      leaf = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}.get(path[-1],
                                                                                                        path[-1])
      t = state_dict[".".join(parts + [leaf])].numpy()
      if path[-1] == "kernel":
        t = t.transpose(2, 3, 1, 0) if target.ndim == 4 else t.reshape(t.shape[:2]).T
      new[path] = jnp.asarray(t)
    out[collection] = unflatten_dict(new)
  return out


@pytest.mark.parametrize("size", [64, 70])  # 70: every stage pads its regions (18, 9, 5, 3 lines)
def test_logits_match_official(official, size):
  torch, module = official
  model = jaxvit.create_model("hire_mlp_tiny", img_size=size)
  with contextlib.redirect_stdout(io.StringIO()):
    torch.manual_seed(0)
    ref = module.hire_mlp_tiny().eval()
  with torch.no_grad():  # random, non-trivial BatchNorms, biases and head
    for name, t in ref.state_dict().items():
      if t.dtype.is_floating_point:
        t.add_((0.1 if name.endswith(("running_mean", "running_var")) or t.ndim == 1 else 0.01) * torch.randn_like(t))
  images = np.random.RandomState(0).standard_normal((2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  variables = to_jaxvit(ref.state_dict(), jax.eval_shape(lambda: jaxvit.init_variables(model)))
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert np.abs(expected[0] - expected[1]).max() > 1e-2  # the logits depend on the image, not only on biases
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("axis", [1, 2])
def test_regions_stack_consecutive_lines_and_invert(axis):
  x = jax.random.normal(jax.random.key(0), (2, 6, 9, 5))
  pixel = 3
  regions = _regions(x, pixel, axis)
  assert regions.shape == ((2, 2, 9, 15) if axis == 1 else (2, 6, 3, 15))
  line = lambda i: x[:, i] if axis == 1 else x[:, :, i]  # noqa: E731
  region = regions[:, 1] if axis == 1 else regions[:, :, 1]
  for j in range(pixel):  # channel c * pixel + j of region 1 is line 3 + j
    np.testing.assert_array_equal(region[..., j::pixel], line(3 + j))
  np.testing.assert_array_equal(_unregions(regions, pixel, axis), x)


def test_other_sizes_bfloat16_and_bad_configs():
  model = jaxvit.create_model("hire_mlp_tiny", img_size=40, depths=(1, 2, 1, 1), num_classes=7)
  variables = jaxvit.init_variables(model)
  assert set(variables) == {"params", "batch_stats"}
  x = jax.random.normal(jax.random.key(0), (2, 40, 40, 3))
  rngs = {"dropout": jax.random.key(1), "drop_path": jax.random.key(2)}
  (logits, out), updates = jit_fast(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs),
                                    variables, x)
  assert logits.shape == (2, 7) and out["stage3"].shape == (2, 2, 2, 512)
  half = model.clone(dtype=jnp.bfloat16)
  low = jit_fast(lambda v, x: half.apply(v, x)[0], variables, x.astype(jnp.bfloat16))
  full = jit_fast(lambda v, x: model.apply(v, x)[0], variables, x)
  assert low.dtype == jnp.bfloat16 and np.abs(np.asarray(low, np.float32) - full).max() < 0.1 * np.abs(full).max() + 0.05
  with pytest.raises(ValueError, match="pixel=\\(4, 3\\); accepted: one entry per stage \\(4, as depths\\)"):
    jaxvit.create_model("hire_mlp_tiny", pixel=(4, 3))
  with pytest.raises(ValueError, match="step_stride=\\(2, 0, 3, 2\\); accepted: integers >= 1"):
    jaxvit.create_model("hire_mlp_tiny", step_stride=(2, 0, 3, 2))
