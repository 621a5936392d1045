"""VOLO: unfold / fold and outlook attention against naive loops, class attention, token labelling's aux
head, other input sizes, bfloat16, config errors, and parity with timm at another resolution."""

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers.class_attention import ClassAttention, ClassBlock
from jaxvit.layers.outlook_attention import OutlookAttention, fold, unfold

HAS_TIMM = importlib.util.find_spec("timm") is not None
SMALL = dict(layers=(1, 1, 1, 1), post_layers=1)


def random_variables(model, x, seed=0):
  """`model.init`'s shapes (traced, not compiled: random initialisers compile slowly) filled from numpy;
  BatchNorm variances stay positive."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), x)))
  rs = np.random.RandomState(seed)

  def fill(path, s):
    v = (0.1 * rs.standard_normal(s.shape)).astype(s.dtype)
    return np.abs(v) + 1.0 if path[-1].key == "var" else v
  return jax.tree_util.tree_map_with_path(fill, shapes)


def naive_unfold(x, k, s, p):
  b, hh, ww, c = x.shape
  h, w = (hh + 2 * p - k) // s + 1, (ww + 2 * p - k) // s + 1
  out = np.zeros((b, h, w, k * k, c), x.dtype)
  for i in range(h):
    for j in range(w):
      for a in range(k):
        for e in range(k):
          y, z = s * i + a - p, s * j + e - p
          if 0 <= y < hh and 0 <= z < ww:
            out[:, i, j, a * k + e] = x[:, y, z]
  return out


@pytest.mark.parametrize("size,k,s,p", [((7, 6), 3, 2, 1), ((8, 8), 3, 2, 1), ((5, 9), 3, 1, 1), ((9, 9), 5, 3, 2)])
def test_unfold_matches_loops_and_fold_is_its_adjoint(size, k, s, p):
  rs = np.random.RandomState(0)
  x = rs.standard_normal((2, *size, 3)).astype(np.float32)
  cols = np.asarray(unfold(jnp.asarray(x), k, s, p))
  np.testing.assert_array_equal(cols, naive_unfold(x, k, s, p))
  y = rs.standard_normal(cols.shape).astype(np.float32)
  folded = np.asarray(fold(jnp.asarray(y), size, k, s, p))
  assert folded.shape == x.shape
  # <unfold(x), y> == <x, fold(y)> for every x, y: fold sums each window entry onto the pixel it came from
  np.testing.assert_allclose((cols * y).sum(), (x * folded).sum(), rtol=1e-5)
  ones = np.asarray(fold(jnp.ones_like(y), size, k, s, p))[0, ..., 0]  # how many windows cover each pixel
  np.testing.assert_array_equal(ones, _coverage(size, k, s, p))


def _coverage(size, k, s, p):
  count = np.zeros(size)
  for i in range((size[0] + 2 * p - k) // s + 1):
    for j in range((size[1] + 2 * p - k) // s + 1):
      for a in range(k):
        for e in range(k):
          y, z = s * i + a - p, s * j + e - p
          if 0 <= y < size[0] and 0 <= z < size[1]:
            count[y, z] += 1
  return count


def test_outlook_attention_matches_a_naive_loop():
  """Eqs. 2-5 position by position: pooled feature -> window attention -> weighted window -> summed back."""
  heads, k, s, c = 2, 3, 2, 8
  x = np.random.RandomState(1).standard_normal((1, 5, 6, c)).astype(np.float32)  # odd: a ceil-mode edge
  layer = OutlookAttention(heads, k, s)
  params = jax.tree.map(lambda t: t + 0.1 * jax.random.normal(jax.random.key(2), t.shape),
                        nn.meta.unbox(layer.init(jax.random.key(0), x, train=False)["params"]))
  got = np.asarray(layer.apply({"params": params}, x, train=False))
  p = jax.tree.map(np.asarray, params)
  v = x @ p["v"]["kernel"]
  d = c // heads
  out = np.zeros_like(x)
  for i in range(3):
    for j in range(3):
      patch = x[0, s * i:s * i + s, s * j:s * j + s]  # the pooled window (2x2, or 1x2 at the bottom edge)
      logits = (patch.mean(axis=(0, 1)) @ p["attn"]["kernel"] + p["attn"]["bias"]).reshape(heads, k * k, k * k)
      attn = np.exp(logits * d ** -0.5)
      attn /= attn.sum(-1, keepdims=True)
      window = [(s * i + a - 1, s * j + e - 1) for a in range(k) for e in range(k)]
      vals = np.stack([v[0, y, z] if 0 <= y < 5 and 0 <= z < 6 else np.zeros(c) for y, z in window])
      for h in range(heads):
        mixed = attn[h] @ vals[:, h * d:(h + 1) * d]  # [K^2, d]
        for (y, z), row in zip(window, mixed):
          if 0 <= y < 5 and 0 <= z < 6:
            out[0, y, z, h * d:(h + 1) * d] += row
  np.testing.assert_allclose(got, out @ p["proj"]["kernel"] + p["proj"]["bias"], atol=1e-5)


def test_class_block_updates_only_the_class_token_as_full_attention_row_zero():
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  block = ClassBlock(num_heads=4)
  params = nn.meta.unbox(block.init(jax.random.key(1), x)["params"])
  y = block.apply({"params": params}, x)
  np.testing.assert_array_equal(y[:, 1:], x[:, 1:])
  assert not np.allclose(y[:, 0], x[:, 0])
  attn = ClassAttention(num_heads=4)
  p = jax.tree.map(np.asarray, nn.meta.unbox(attn.init(jax.random.key(2), x, train=False)["params"]))
  got = np.asarray(attn.apply({"params": p}, x, train=False))
  xn = np.asarray(x)
  kv = np.einsum("bnc,cthd->bnthd", xn, p["kv"]["kernel"])
  q = np.einsum("bc,chd->bhd", xn[:, 0], p["q"]["kernel"])
  logits = np.einsum("bhd,bnhd->bhn", q, kv[:, :, 0]) / 2.0  # head_dim 4
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  ref = np.einsum("hdc,bhd->bc", p["proj"]["kernel"], np.einsum("bhn,bnhd->bhd", w, kv[:, :, 1]))
  np.testing.assert_allclose(got[:, 0], ref + p["proj"]["bias"], atol=1e-5)


def test_aux_head_logits_other_size_and_bfloat16():
  model = jaxvit.create_model("volo_d1_224", num_classes=7, img_size=(64, 96), **SMALL)
  x = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
  logits, out = jax.jit(lambda v: model.apply(v, x))(random_variables(model, x))  # non-zero heads
  assert [out[f"stage{i}"].shape for i in range(4)] == [(2, 8, 12, 192)] + [(2, 4, 6, 384)] * 3
  assert out["logits_aux"].shape == (2, 24, 7) and out["pre_logits"].shape == (2, 384)
  np.testing.assert_allclose(logits, out["logits_cls"] + 0.5 * out["logits_aux"].max(axis=1), atol=1e-6)
  bf16 = model.clone(dtype=jnp.bfloat16, num_classes=0)
  pooled, out = jax.jit(lambda v: bf16.apply(v, x))(random_variables(bf16, x))
  assert pooled.dtype == jnp.bfloat16 and pooled.shape == (2, 384) and "logits_aux" not in out
  assert np.isfinite(np.asarray(pooled, np.float32)).all()
  with pytest.raises(ValueError, match="img_size=64"):
    model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize("field,value,match", [
    ("img_size", 200, "img_size=200; accepted: multiples of 2 x patch_size = 16"),
    ("embed_dims", (192, 384, 256, 384), "embed_dims=.*; accepted: one width per stage, the same for stages 1.."),
    ("num_heads", (5, 12, 12, 12), "num_heads=.*; accepted: one per stage, dividing"),
    ("kernel_size", 4, "kernel_size=4; accepted: odd"),
    ("post_layers", 0, "global_pool='token'; accepted: 'avg' when post_layers=0"),
    ("patch_size", 32, "patch_size=32; accepted: \\(4, 8, 16\\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match="VOLO: " + match):
    jaxvit.create_model("volo_d1_224", **{field: value})


def check_parity(name, timm_kwargs, **overrides):
  """Logits of timm `name` built with `timm_kwargs` (random weights moved off their init) and of its conversion."""
  from convert.timm_reference import perturbed, timm_logits
  from jaxvit.convert import from_timm
  reference = perturbed(name, **timm_kwargs)
  model, variables = from_timm(reference, **overrides)
  _, h, w, c = jaxvit.utils.input_shape(model, 2)
  images = np.random.RandomState(0).standard_normal((2, h, w, c)).astype(np.float32)
  expected = timm_logits(reference, images)
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.parity
@pytest.mark.skipif(not HAS_TIMM, reason="needs timm")
def test_other_resolution_and_pooling_match_timm():
  """timm built at 64x96 px with avg pooling and 10 classes; and a 224 checkpoint's position embedding
  resampled onto a 64 px model."""
  import timm
  from jaxvit.convert import convert_state_dict
  check_parity("volo_d1_224", dict(img_size=(64, 96), global_pool="avg", num_classes=10))
  _, variables = convert_state_dict("volo_d1_224", timm.create_model("volo_d1_224").state_dict(), img_size=64)
  assert variables["params"]["pos_embed"].shape == (1, 4, 4, 384)
