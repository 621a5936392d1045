"""PoolFormer / PoolFormerV2 (jaxvit.models.metaformer): the pooling mixer against a naive average, the stage
layout at other input sizes, V1 / V2 parameter structure, and clear config errors."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert.metaformer import timm_name
from jaxvit.layers.pooling_mixer import pooling_mixer
from fast_jit import jit_fast


def random_params(model, x):
  """Parameters of `model.init`'s shapes filled from numpy (no compiled init)."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), x)))
  rs = np.random.RandomState(0)
  return jax.tree.map(lambda s: (0.1 * rs.standard_normal(s.shape)).astype(s.dtype), shapes)


def naive_pool_minus_identity(x, pool_size):
  """Average of the in-image pixels of each window (torch's count_include_pad=False), minus x, by loops."""
  _, h, w, _ = x.shape
  r = pool_size // 2
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      window = x[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
      out[:, i, j] = window.mean(axis=(1, 2)) - x[:, i, j]
  return out


@pytest.mark.parametrize("shape,pool_size", [((2, 5, 7, 3), 3), ((1, 6, 4, 2), 5), ((1, 1, 3, 2), 3)])
def test_pooling_mixer_is_average_of_in_image_pixels_minus_input(shape, pool_size):
  x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
  np.testing.assert_allclose(pooling_mixer(jnp.asarray(x), pool_size), naive_pool_minus_identity(x, pool_size),
                             atol=1e-6)


def test_pooling_mixer_rejects_even_window():
  with pytest.raises(ValueError, match="pool_size=2; accepted: odd"):
    pooling_mixer(jnp.zeros((1, 4, 4, 1)), 2)


@pytest.mark.parametrize("name,dtype", [("poolformer_s12", jnp.float32), ("poolformerv2_s12", jnp.bfloat16)])
def test_any_input_size_gives_stage_maps(name, dtype):
  model = jaxvit.create_model(name, num_classes=0, depths=(1, 1, 1, 1), dtype=dtype)
  x = jnp.ones((2, 72, 40, 3))  # not the reference size, not square
  variables = random_params(model, x)
  pooled, out = jit_fast(model.apply, variables, x)
  # stem: 7x7 stride 4 padding 2; then 3x3 stride 2 padding 1 (rounds up)
  sizes = [(18, 10), (9, 5), (5, 3), (3, 2)]
  assert [out[f"stage{i}"].shape for i in range(4)] == [(2, h, w, c) for (h, w), c in zip(sizes, model.dims)]
  assert pooled.dtype == dtype and np.array_equal(pooled, out["logits"]) and pooled.shape == (2, model.num_features)
  assert set(variables) == {"params"}  # GroupNorm / LayerNorm: no batch statistics
  assert "head_fc" not in variables["params"]


def test_v1_and_v2_structure_and_timm_names():
  """V1: LayerScale everywhere, no stem / downsampling norm, GELU; V2: ResScale in the last two stages only,
  bias-free norms, StarReLU's scalars."""
  def paths(name):
    model = jaxvit.create_model(name, depths=(1, 1, 1, 1), img_size=32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
    return model, flax.traverse_util.flatten_dict(flax.core.meta.unbox(shapes), sep="/")
  v1, p1 = paths("poolformer_s12")
  v2, p2 = paths("poolformerv2_s12")
  assert all(f"stages_{i}/blocks_0/layer_scale{k}/scale" in p1 for i in range(4) for k in (1, 2))
  assert not any("res_scale" in p or "stem_norm" in p or "/act/" in p for p in p1)
  assert "stages_0/blocks_0/norm1/bias" in p1 and "stages_0/blocks_0/norm1/bias" not in p2
  assert [i for i in range(4) if f"stages_{i}/blocks_0/res_scale1/scale" in p2] == [2, 3]
  assert not any("layer_scale" in p for p in p2)
  assert "stem_norm/scale" in p2 and "stages_1/downsample/norm/scale" in p2
  assert p2["stages_0/blocks_0/mlp/act/scale"].shape == (1,)
  assert "stages_0/downsample/conv/kernel" not in p2  # stage 0 keeps the stem's width
  assert timm_name("stages_2/blocks_0/res_scale1/scale", v2) == "stages.2.blocks.0.res_scale1.scale"
  assert timm_name("stages_0/blocks_0/mlp/act/scale", v2) == "stages.0.blocks.0.mlp.act.scale"
  assert timm_name("stages_0/blocks_0/norm1/scale", v1) == "stages.0.blocks.0.norm1.weight"
  assert timm_name("stem_conv/kernel", v1) == "stem.conv.weight" and timm_name("head_fc/bias", v1) == "head.fc.bias"


def test_train_mode_drops_paths_per_example():
  model = jaxvit.create_model("poolformer_s12", num_classes=3, depths=(1, 1, 1, 1), drop_path_rate=0.5,
                              layer_scale_init_values=1.0)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))

  def both(variables, x):
    rngs = {"drop_path": jax.random.key(2), "dropout": jax.random.key(3)}
    return model.apply(variables, x)[1]["stage3"], model.apply(variables, x, train=True, rngs=rngs)[1]["stage3"]

  evaluated, trained = jit_fast(both, random_params(model, x), x)
  assert not np.allclose(evaluated, trained)


@pytest.mark.parametrize("field,value,match", [
    ("token_mixers", ("pooling", "attention", "pooling", "pooling"), "token_mixers=.*accepted: 4 entries .*'pooling'"),
    ("dims", (64, 128, 320), "dims=\\(64, 128, 320\\); accepted: 4 stage widths"),
    ("mlp_act", "relu", "mlp_act='relu'; accepted: \\('gelu', 'star_relu'\\)"),
    ("norm", "batch", "norm='batch'; accepted: \\('group', 'layer'\\)"),
    ("pool_size", 4, "pool_size=4; accepted: odd sizes"),
    ("res_scale_init_values", (None, 1.0), "res_scale_init_values=\\(None, 1.0\\); accepted: 4 entries"),
    ("drop_path_rate", 1.0, "drop_path_rate=1.0; accepted: \\[0, 1\\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match="MetaFormer: " + match):
    jaxvit.create_model("poolformerv2_s12", **{field: value})
