"""S2-MLP / S2-MLPv2: the spatial shift against a numpy transcription of the paper's Algorithm 1, logits against the
unofficial PyTorch reimplementation (liuruiyang98/Jittor-MLP, from the local mirror; skipped without it), parameter
counts, forward / backward, other input sizes, bad configs and bfloat16."""

import os
import re
import subprocess
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

import jaxvit
from jaxvit.layers.spatial_shift import spatial_shift

REIMPL_REPO = "/work/.mirror/liuruiyang98+Jittor-MLP/repo"


def algorithm_1(x):
  """S2-MLP Algorithm 1 as printed (a `[w, h, c]` map, here with a leading batch axis); numpy's slice assignment
  reads the source before writing, which is the pseudo-code's meaning."""
  x = x.copy()
  _, w, h, c = x.shape
  x[:, 1:, :, :c // 4] = x[:, :w - 1, :, :c // 4]
  x[:, :w - 1, :, c // 4:c // 2] = x[:, 1:, :, c // 4:c // 2]
  x[:, :, 1:, c // 2:c * 3 // 4] = x[:, :, :h - 1, c // 2:c * 3 // 4]
  x[:, :, :h - 1, 3 * c // 4:] = x[:, :, 1:, 3 * c // 4:]
  return x


@pytest.mark.parametrize("shape", [(2, 5, 6, 8), (1, 4, 3, 10), (1, 1, 3, 4)])  # 10: uneven groups; 1-pixel axis
def test_spatial_shift_is_algorithm_1(shape):
  x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
  np.testing.assert_array_equal(spatial_shift(jnp.asarray(x)), algorithm_1(x))
  # S2-MLPv2's second shift is Algorithm 1 with the two spatial axes swapped
  swapped = algorithm_1(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
  np.testing.assert_array_equal(spatial_shift(jnp.asarray(x), first_axis=2), swapped)


def test_spatial_shift_moves_one_pixel_and_keeps_borders():
  x = jnp.arange(3 * 4 * 4, dtype=jnp.float32).reshape(1, 3, 4, 4)  # one channel per group
  y = spatial_shift(x)
  np.testing.assert_array_equal(y[0, 1:, :, 0], x[0, :-1, :, 0])  # group 1: down by one row
  np.testing.assert_array_equal(y[0, 0, :, 0], x[0, 0, :, 0])  # ... the first row keeps its own values
  np.testing.assert_array_equal(y[0, :-1, :, 1], x[0, 1:, :, 1])  # group 2: up
  np.testing.assert_array_equal(y[0, :, 1:, 2], x[0, :, :-1, 2])  # group 3: right
  np.testing.assert_array_equal(y[0, :, :-1, 3], x[0, :, 1:, 3])  # group 4: left
  np.testing.assert_array_equal(y[0, :, -1, 3], x[0, :, -1, 3])
  with pytest.raises(ValueError, match="first_axis=3; accepted: 1 or 2"):
    spatial_shift(x, first_axis=3)


@pytest.fixture(scope="module")
def reimpl():
  torch = pytest.importorskip("torch")
  pytest.importorskip("einops")
  if not os.path.isdir(REIMPL_REPO):
    pytest.skip("no local mirror of liuruiyang98/Jittor-MLP")
  modules = {}
  for version in ("v1", "v2"):
    source = subprocess.run(["git", "--git-dir", REIMPL_REPO, "show", f"HEAD:models_pytorch/s2_mlp_{version}.py"],
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from .utils import pair", "pair = lambda t: t if isinstance(t, tuple) else (t, t)")
    # Its in-place shifts copy overlapping slices (`x[:, 1:] = x[:, :w-1]`), which PyTorch on CPU carries forward
    # (row 0 smeared over the map) instead of shifting; reading a copy of the source restores Algorithm 1.
    source, count = re.subn(r"(x\[[^\]]*\]) = (x\[[^\]]*\])", r"\1 = \2.clone()", source)
    assert count == (4 if version == "v1" else 8)
    module = types.ModuleType(f"s2_mlp_{version}_reimpl")
    exec(compile(source, f"s2_mlp_{version}.py", "exec"), module.__dict__)
    modules[version] = module
  return torch, modules


def to_jaxvit(state_dict, variables, mixer):
  """Reimplementation state dict -> jaxvit variables (`stages.0.1.model.3.0.fn.0.weight` ->
  `blocks_0_3/attn/mlp1/kernel`)."""
  mixer_names = {"mlp1": "fn.0", "mlp2": "fn.3"} if mixer == "shift" else {"mlp1": "fn.mlp1", "mlp2": "fn.mlp2"}
  out = {}
  for path, target in flatten_dict(variables["params"]).items():
    leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
    if path[0].startswith("patch_embed_"):
      key = f"stages.{path[0].split('_')[-1]}.0.{leaf}"
    elif path[0] == "head":
      key = f"mlp_head.1.{leaf}"
    else:
      _, i, j = path[0].split("_")
      sub = {"norm1": "0.norm", "norm2": "1.norm", "mlp": "1.fn"}.get(path[1])
      if path[1] == "attn":
        sub = "0." + ("fn.split_attention." + path[3] if path[2] == "split_attention" else mixer_names[path[2]])
      elif path[1] == "mlp":
        sub += {"fc1": ".0", "fc2": ".3"}[path[2]]
      key = f"stages.{i}.1.model.{j}.{sub}.{leaf}"
    t = state_dict[key].numpy()
    if path[-1] == "kernel":
      t = t.transpose(2, 3, 1, 0) if target.ndim == 4 else t.T
    assert t.shape == target.shape, key
    out[path] = jnp.asarray(t)
  return {"params": unflatten_dict(out)}


@pytest.mark.parametrize("mixer", ["shift", "split_shift"])
def test_logits_match_reimplementation(reimpl, mixer):
  torch, modules = reimpl
  size = (32, 48) if mixer == "shift" else (28, 42)  # non-square: rows and columns are not interchangeable
  if mixer == "shift":
    arch = dict(patch_sizes=(16,), embed_dims=(24,), depths=(2,), mlp_ratios=(4,))
    ref = modules["v1"].S2MLPv1(image_size=size, patch_size=[16], d_model=[24], depth=[2], num_classes=10,
                                expansion_factor=[4])
  else:  # the reimplementation's split attention is C -> C -> 3C (split_hidden_ratio 1)
    arch = dict(patch_sizes=(7, 2), embed_dims=(16, 24), depths=(1, 2), mlp_ratios=(3, 3), split_hidden_ratio=1.0)
    ref = modules["v2"].S2MLPv2(image_size=size, patch_size=[7, 2], d_model=[16, 24], depth=[1, 2], num_classes=10,
                                expansion_factor=[3, 3])
  model = jaxvit.create_model("s2mlp_wide_224" if mixer == "shift" else "s2mlpv2_small_224", img_size=size[0],
                              num_classes=10, **arch)
  torch.manual_seed(0)
  ref.eval()
  with torch.no_grad():  # non-trivial norms and biases
    for t in ref.state_dict().values():
      t.add_(0.1 * torch.randn_like(t))
  images = np.random.RandomState(0).standard_normal((2, *size, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  variables = to_jaxvit(ref.state_dict(), jax.eval_shape(lambda: jaxvit.init_variables(model)), mixer)
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert np.abs(expected[0] - expected[1]).max() > 1e-2  # the logits depend on the image
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_parameter_counts_follow_the_tables():
  """S2-MLP's Table (wide 71M, deep 51M: the closed form below gives 72.24M / 53.92M, see tests/published.py) and
  S2-MLPv2's (Small 25M, Medium 55M)."""
  def count(name):
    return jaxvit.count_params(jax.eval_shape(lambda: jaxvit.init_variables(jaxvit.create_model(name))))

  def s2mlp(c, depth, p=16, r=4, classes=1000):  # patch embedding, blocks (2 C x C, MLP, 2 LN), head
    return p * p * 3 * c + c + depth * (2 * (c * c + c) + 2 * r * c * c + r * c + c + 4 * c) + c * classes + classes
  assert count("s2mlp_wide_224") == s2mlp(768, 12) == 72_239_848
  assert count("s2mlp_deep_224") == s2mlp(384, 36) == 53_916_520
  assert round(count("s2mlpv2_small_224") / 1e6) == 25 and round(count("s2mlpv2_medium_224") / 1e6) == 55


def test_forward_backward_other_sizes_bfloat16_and_bad_configs():
  model = jaxvit.create_model("s2mlpv2_small_224", img_size=28, embed_dims=(8, 16), depths=(1, 1), num_classes=5,
                              drop_path_rate=0.1)  # (the MLPs' dropout is the shared Mlp's; it doubles the compile)
  shapes = jax.eval_shape(lambda: jaxvit.init_variables(model))  # random (non-zero head) weights, no init compile
  rng = np.random.RandomState(0)
  variables = jax.tree.map(lambda t: jnp.asarray(0.2 * rng.standard_normal(t.shape), t.dtype), shapes)
  x = jax.random.normal(jax.random.key(0), (2, 28, 42, 3))  # another, non-square size
  rngs = {"drop_path": jax.random.key(2)}

  def loss(params):
    logits, out = model.apply({"params": params}, x, train=True, rngs=rngs)
    return (logits ** 2).mean(), out

  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  assert np.isfinite(value) and out["stage0"].shape == (2, 4, 6, 8) and out["stage1"].shape == (2, 2, 3, 16)
  flat = flatten_dict(grads)
  assert all(np.isfinite(g).all() for g in flat.values())
  assert all(np.abs(g).max() > 0 for path, g in flat.items() if path[-1] in ("kernel", "scale"))
  half = model.clone(dtype=jnp.bfloat16)
  low, full = jax.jit(lambda v, x: (half.apply(v, x.astype(jnp.bfloat16))[0], model.apply(v, x)[0]))(variables, x)
  assert low.dtype == jnp.bfloat16
  assert np.abs(np.asarray(low, np.float32) - full).max() < 0.1 * np.abs(full).max() + 0.05
  with pytest.raises(ValueError, match=r"img_size=\(28, 40\); accepted: input sides that are multiples of "
                                       r"prod\(patch_sizes\)=14"):
    model.apply(variables, x[:, :, :40])
  with pytest.raises(ValueError, match=r"img_size=40; accepted: multiples of prod\(patch_sizes\)=16"):
    jaxvit.create_model("s2mlp_wide_224", img_size=40)
  with pytest.raises(ValueError, match=r"embed_dims=\(768, 384\); accepted: one entry per stage \(1, as depths\)"):
    jaxvit.create_model("s2mlp_wide_224", embed_dims=(768, 384))
  with pytest.raises(ValueError, match="mixer='roll'; accepted: \\('shift', 'split_shift'\\)"):
    jaxvit.create_model("s2mlp_deep_224", mixer="roll")
  with pytest.raises(ValueError, match="split_hidden_ratio=0.001; accepted: a ratio giving a hidden width >= 1"):
    jaxvit.create_model("s2mlpv2_small_224", split_hidden_ratio=0.001)
  with pytest.raises(ValueError, match=r"embed_dims=\(2,\); accepted: integers >= 4"):
    jaxvit.create_model("s2mlp_deep_224", embed_dims=(2,))
