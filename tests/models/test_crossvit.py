"""CrossViT (arXiv:2103.14899): the cross-attention layer against a naive reference, the branches' isolation
outside the fusion, PyTorch's bicubic resize of the second branch, other input sizes, config errors, bfloat16
and (marked `parity`) tiny configurations against timm."""

import importlib.util

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers.cross_attention import CrossAttention, CrossAttentionFusion
from jaxvit.layers.resize import interpolate_bicubic

HAS_TIMM = importlib.util.find_spec("timm") is not None
# 120 px: branches at 120 and 112 px (10 x 10 and 7 x 7 patches); two multi-scale encoders
TINY = dict(img_size=120, embed_dim=(16, 32), num_heads=(2, 4), depth=((1, 2, 0), (1, 1, 0)), num_classes=4)


def tiny(name="crossvit_tiny_240", **kw):
  return jaxvit.create_model(name, **{**TINY, **kw})


def images(size=120, batch=2, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def random_variables(module, *args, seed=0, scale=0.3):
  """`module.init`'s variables (shapes only: nothing compiled) filled from numpy: every path matters (heads are
  not zero)."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a, train=False), *args))
  rs = np.random.RandomState(seed)
  return jax.tree.map(lambda a: (scale * rs.standard_normal(a.shape)).astype(a.dtype), shapes)


def model_variables(model, seed=0, scale=0.3):
  return random_variables(model, jax.ShapeDtypeStruct(jaxvit.utils.input_shape(model), jnp.float32), seed=seed,
                          scale=scale)


def _naive_cross_attention(p, x, heads):
  """The class token (query) attends to every token, one head and one example at a time."""
  b, n, c = x.shape
  d = c // heads
  w = {k: (np.asarray(p[k]["kernel"]).reshape(c, c), np.asarray(p[k]["bias"]).reshape(c)) for k in ("wq", "wk", "wv")}
  proj_w, proj_b = np.asarray(p["proj"]["kernel"]).reshape(c, c), np.asarray(p["proj"]["bias"])
  out = np.zeros((b, 1, c))
  for i in range(b):
    q, k, v = (x[i] @ w[name][0] + w[name][1] for name in ("wq", "wk", "wv"))
    heads_out = []
    for h in range(heads):
      s = slice(h * d, (h + 1) * d)
      logits = k[:, s] @ q[0, s] / np.sqrt(d)
      a = np.exp(logits - logits.max())
      heads_out.append((a / a.sum()) @ v[:, s])
    out[i, 0] = np.concatenate(heads_out) @ proj_w + proj_b
  return out


def _layer_norm(x, p, eps=1e-6):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _gelu(x):
  from scipy.special import erf
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def test_cross_attention_matches_naive():
  x = np.random.RandomState(0).standard_normal((2, 7, 12)).astype(np.float32)
  layer = CrossAttention(num_heads=3)
  params = random_variables(layer, x)["params"]
  y = layer.apply({"params": params}, x, train=False)
  assert y.shape == (2, 1, 12)
  np.testing.assert_allclose(y, _naive_cross_attention(params, x.astype(np.float64), 3), atol=1e-5)


def test_cross_attention_fusion_matches_paper():
  """y_cls = f(x_cls) + MCA(LN([f(x_cls) || x'_patch])), new class token = g(y_cls); f, g: LN -> GELU -> Linear."""
  rs = np.random.RandomState(1)
  cls, patches = rs.standard_normal((2, 1, 8)).astype(np.float32), rs.standard_normal((2, 5, 12)).astype(np.float32)
  layer = CrossAttentionFusion(num_heads=3)
  p = random_variables(layer, cls, patches)["params"]
  y = layer.apply({"params": p}, cls, patches, train=False)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)

  def linear(x, q):
    return x @ q["kernel"] + q["bias"]
  f = linear(_gelu(_layer_norm(cls.astype(np.float64), p["norm_in"])), p["proj_in"])  # [2, 1, 12]
  x = np.concatenate([f, patches], axis=1)
  block = p["blocks_0"]
  y_cls = f + _naive_cross_attention(block["attn"], _layer_norm(x, block["norm1"]), 3)
  expected = linear(_gelu(_layer_norm(y_cls, p["norm_out"])), p["proj_out"])
  assert y.shape == (2, 1, 8)
  np.testing.assert_allclose(y, expected, atol=1e-5)


def test_branches_exchange_only_through_fusion():
  """Changing branch 1's embedding leaves branch 0's patch tokens of the first encoder alone (its class token
  changes, through the fusion); with every fusion's output projection g zeroed, branch 0 is independent of it."""
  model = tiny()
  params = model_variables(model)["params"]
  other = dict(params, patch_embed_1=jax.tree.map(lambda a: -a, params["patch_embed_1"]),
               pos_embed_1=-params["pos_embed_1"])
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x)[1])
  x = images()
  a, b = apply(params, x), apply(other, x)
  np.testing.assert_allclose(a["block0_0"][:, 1:], b["block0_0"][:, 1:], atol=1e-6)
  assert np.abs(a["block0_0"][:, 0] - b["block0_0"][:, 0]).max() > 1e-2
  assert np.abs(a["tokens_0"] - b["tokens_0"]).max() > 1e-2

  def zero_fusion(p):
    flat = flax.traverse_util.flatten_dict(p, sep="/")
    flat = {k: jnp.zeros_like(v) if "/proj_out/" in k else v for k, v in flat.items()}
    return flax.traverse_util.unflatten_dict(flat, sep="/")
  a, b = apply(zero_fusion(params), x), apply(zero_fusion(other), x)
  np.testing.assert_allclose(a["tokens_0"], b["tokens_0"], atol=1e-6)
  np.testing.assert_allclose(a["logits_0"], b["logits_0"], atol=1e-6)
  assert np.abs(a["tokens_1"] - b["tokens_1"]).max() > 1e-2


@pytest.mark.parametrize("sizes", [(240, 224), (408, 384), (30, 77), (50, 13)])
def test_bicubic_resize_matches_torch(sizes):
  torch = pytest.importorskip("torch")
  x = np.random.RandomState(0).standard_normal((2, sizes[0], sizes[0] + 3, 3)).astype(np.float32)
  out = (sizes[1], sizes[1] + 2)
  expected = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=out, mode="bicubic",
                                             align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(interpolate_bicubic(x, out), expected, atol=1e-5)
  assert interpolate_bicubic(x, x.shape[1:3]) is x


def test_other_sizes_and_crop_scale():
  """A 120 px model takes any input: each branch's image is centre-cropped with crop_scale (resized otherwise:
  `test_tiny_configs_match_timm`); another img_size and num_classes=0 work."""
  model = tiny(crop_scale=True)
  variables = model_variables(model)
  apply = jax.jit(lambda x: model.apply(variables, x)[0])
  x = images(136)
  # cropping 136 -> 120 then 120 -> 112 takes the same pixels as 136 -> 112 directly
  np.testing.assert_allclose(apply(x), apply(x[:, 8:128, 8:128]), atol=1e-5)
  big = tiny(img_size=360, num_classes=0, depth=((1, 1, 0),))
  logits, out = jax.jit(big.apply)(model_variables(big), images(360, batch=1))
  assert big.grids == [(30, 30), (21, 21)] and logits.shape == (1, 48)
  np.testing.assert_array_equal(out["pre_logits"], logits)


@pytest.mark.parametrize("overrides,field", [
    (dict(img_size=100), "img_size"),
    (dict(global_pool="max"), "global_pool"),
    (dict(depth=((0, 1, 0),)), "depth"),
    (dict(depth=((1, 1),)), "depth"),
    (dict(num_heads=(3, 4)), "num_heads"),
    (dict(embed_dim=(16,)), "embed_dim"),
    (dict(multi_conv=True, patch_size=(8, 16)), "patch_size"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
])
def test_bad_config_names_the_field(overrides, field):
  with pytest.raises(ValueError, match=f"CrossViT: {field}="):
    tiny(**overrides)


def test_bfloat16():
  model = tiny("crossvit_9_dagger_240", depth=((1, 1, 0),))
  variables = model_variables(model, scale=0.05)
  x = images()
  ref = jax.jit(model.apply)(variables, x)[0]
  half = model.clone(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  logits = jax.jit(half.apply)(jax.tree.map(lambda v: v.astype(jnp.bfloat16), variables), x)[0]
  assert logits.dtype == jnp.bfloat16 and np.isfinite(np.asarray(logits, np.float32)).all()
  np.testing.assert_allclose(np.asarray(logits, np.float32), ref, atol=0.1 * float(np.abs(ref).max()) + 0.05)


@pytest.mark.parity
@pytest.mark.skipif(not HAS_TIMM, reason="needs timm")
@pytest.mark.parametrize("name,options,depth,size", [
    ("crossvit_9_dagger_240", dict(global_pool="avg"), ((1, 2, 0), (1, 1, 0)), 136),  # avg pool, both resized
    ("crossvit_tiny_240", dict(crop_scale=True), ((1, 2, 2),), 136),  # cropped; two cross-attention blocks
])
def test_tiny_configs_match_timm(name, options, depth, size):
  from convert.timm_reference import perturbed, timm_logits
  from jaxvit.convert import convert_state_dict, from_timm
  arch = dict(embed_dim=(16, 32), num_heads=(2, 4), depth=depth, drop_path_rate=0.3, **options)
  reference = perturbed(name, img_size=120, num_classes=4, **arch)
  model, variables = from_timm(reference, **arch)
  x = np.random.RandomState(0).standard_normal((2, size, size, 3)).astype(np.float32)
  expected = timm_logits(reference, x)
  np.testing.assert_allclose(jax.jit(lambda v, x: model.apply(v, x)[0])(variables, x), expected,
                             atol=1e-4 * max(1.0, np.abs(expected).max()))
  # stochastic depth: timm's rates, in its module order (two per block, then one per cross-attention block)
  timm_rates = [m.drop_prob for m in reference.modules() if type(m).__name__ == "DropPath"]
  ours = []
  for rates, c in zip(model.drop_path_rates(), model.depth):
    ours += [rates[i] for d in range(2) for i in range(c[d]) for _ in range(2)] + [rates[-1]] * (2 * max(c[-1], 1))
  np.testing.assert_allclose([r for r in ours if r > 0], timm_rates, atol=1e-6)
  # a checkpoint converts to another img_size: position embeddings resampled to each branch's grid
  _, big = convert_state_dict(name, reference.state_dict(), img_size=240, num_classes=4, **arch)
  assert big["params"]["pos_embed_0"].shape == (1, 401, 16) and big["params"]["pos_embed_1"].shape == (1, 197, 32)
