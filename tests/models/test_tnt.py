"""TNT: the unfold-matmul convolution against XLA's, per-patch (new) vs whole-image (legacy) pixel
embedding, other input sizes, bfloat16, config errors, and parity with timm at another resolution."""

import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.models.tnt import PixelEmbed, UnfoldConv

HAS_TIMM = importlib.util.find_spec("timm") is not None


def random_variables(model, x, seed=0):
  """`model.init`'s shapes (traced, not compiled: random initialisers compile slowly) filled from numpy;
  BatchNorm variances stay positive."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), x)))
  rs = np.random.RandomState(seed)

  def fill(path, s):
    v = (0.1 * rs.standard_normal(s.shape)).astype(s.dtype)
    return np.abs(v) + 1.0 if path[-1].key == "var" else v
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("size,k,s,p", [((16, 16), 7, 4, 3), ((13, 10), 7, 4, 3), ((9, 9), 3, 2, 1)])
def test_unfold_conv_is_a_convolution(size, k, s, p):
  x = jax.random.normal(jax.random.key(0), (2, *size, 3))
  layer = UnfoldConv(5, k, s, p)
  params = nn.meta.unbox(layer.init(jax.random.key(1), x)["params"])
  params["bias"] = jnp.arange(5.0)
  expected = jax.lax.conv_general_dilated(x, params["kernel"], (s, s), ((p, p), (p, p)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["bias"]
  np.testing.assert_allclose(layer.apply({"params": params}, x), expected, atol=1e-5)


@pytest.mark.parametrize("legacy", [False, True])
def test_words_see_other_patches_only_in_the_legacy_embedding(legacy):
  """The new pixel embedding convolves each 16x16 patch on its own (zero padding at its border); the legacy
  one convolves the image, so the first column of words of a patch sees the patch to its left (a word at
  column j covers pixels 4 j - 3 ... 4 j + 3)."""
  embed = PixelEmbed(inner_dim=8, legacy=legacy)
  x = jax.random.normal(jax.random.key(0), (1, 16, 32, 3))
  pos = jnp.zeros((1, 4, 4, 8))
  params = embed.init(jax.random.key(1), x, pos)
  words = embed.apply(params, x, pos)
  assert words.shape == (2, 16, 8)  # [B * patches, 4 x 4 words, inner_dim]
  changed = embed.apply(params, x.at[:, :, :16].add(1.0), pos)  # only the first patch
  assert (np.abs(np.asarray(words[0] - changed[0])).max(axis=-1) > 0).all()
  second_moved = np.abs(np.asarray(words[1] - changed[1])).max(axis=-1).reshape(4, 4) > 0
  assert second_moved[:, 0].all() == legacy and not second_moved[:, 1:].any()


@pytest.mark.parametrize("legacy", [False, True])
def test_other_size_and_bfloat16(legacy):
  model = jaxvit.create_model("tnt_s_patch16_224", legacy=legacy, depth=1, img_size=(32, 48), num_classes=0,
                              dtype=jnp.bfloat16, global_pool="avg")
  x = jax.random.normal(jax.random.key(0), (2, 32, 48, 3))
  pooled, out = jax.jit(lambda v: model.apply(v, x))(random_variables(model, x))
  assert pooled.dtype == jnp.bfloat16 and pooled.shape == (2, 384) and out["block0"].shape == (2, 7, 384)
  assert np.isfinite(np.asarray(pooled, np.float32)).all()
  with pytest.raises(ValueError, match="img_size=64"):
    model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize("field,value,match", [
    ("img_size", 200, "img_size=200; accepted: multiples of patch_size=16"),
    ("num_heads_inner", 5, "num_heads_inner=5; accepted: divisors of inner_dim=24"),
    ("num_heads_outer", 5, "num_heads_outer=5; accepted: divisors of embed_dim=384"),
    ("global_pool", "max", "global_pool='max'; accepted: \\('token', 'avg'\\)"),
    ("first_stride", 3, "patch_size=16; accepted: multiples of first_stride=3 with legacy=True"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match="TNT: " + match):
    jaxvit.create_model("tnt_s_legacy_patch16_224", **{field: value})


@pytest.mark.parity
@pytest.mark.skipif(not HAS_TIMM, reason="needs timm")
@pytest.mark.parametrize("name", ["tnt_s_patch16_224", "tnt_s_legacy_patch16_224"])
def test_other_resolution_matches_timm(name):
  """timm built at 48x80 px with average pooling, 10 classes and two blocks; a 224 checkpoint's patch
  position embedding resampled onto the 3x5 grid converts."""
  import timm
  from convert.timm_reference import perturbed, timm_logits
  from jaxvit.convert import convert_state_dict, from_timm
  reference = perturbed(name, img_size=(48, 80), global_pool="avg", num_classes=10, depth=2)
  model, variables = from_timm(reference, depth=2)
  images = np.random.RandomState(0).standard_normal((2, 48, 80, 3)).astype(np.float32)
  expected = timm_logits(reference, images)
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
  _, variables = convert_state_dict(name, timm.create_model(name, depth=2).state_dict(), img_size=(48, 80), depth=2)
  assert variables["params"]["patch_pos"].shape == (1, 16, 384)
