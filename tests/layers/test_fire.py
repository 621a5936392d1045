"""FIRE (jaxvit.layers.fire, `pos_embed="fire"`): the bias depends on the 2D offset only, equals the paper's formula
computed pair by pair, interpolates progressively (the largest offset maps to the same input at any grid once the
grid outgrows the threshold L), leaves prefix tokens unbiased; attention's 4D bias; the ViT with FIRE forward and
backward, other sizes, errors, bfloat16 and its parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers import Attention
from jaxvit.layers.fire import Fire, relative_offsets
from jaxvit.layers.rope import patch_coords
from fast_jit import jit_fast
from numpy_params import random_params


def fire_bias(module, params, num_tokens):
  return np.asarray(module.apply({"params": params}, num_tokens))


@pytest.mark.parametrize("grid", [(3, 4), (5, 2)])
def test_offsets_index_each_pair(grid):
  offsets, index = relative_offsets(grid)
  xy = patch_coords(grid)  # (x, y)
  expected = (xy[:, None, ::-1] - xy[None, :, ::-1])  # query - key (FIRE's i - j), as (dy, dx)
  np.testing.assert_array_equal(offsets[index], expected)


def test_bias_is_the_formula_and_depends_on_the_offset_only():
  grid, heads, prefix = (4, 5), 3, 2
  layer = Fire(heads, grid, init_L=3.0)
  params = random_params(layer, 22, scale=0.5)
  params["c"], params["L_multiplier"] = np.float32(0.7), np.float32(1.2)
  bias = fire_bias(layer, params, prefix + 20)
  assert bias.shape == (1, heads, 22, 22)
  assert not bias[0, :, :prefix].any() and not bias[0, :, :, :prefix].any()  # prefix rows and columns are zero
  # b(i, j) = MLP(sign(d) psi(|d|) / (psi(max(L, n - 1)) + eps)) per axis, psi(d) = log(|c| d + 1), pair by pair
  psi = lambda d: np.log(np.abs(0.7 * d) + 1.0)
  xy = patch_coords(grid)
  w0, b0 = params["mlp_0"]["kernel"], params["mlp_0"]["bias"]
  w2, b2 = params["mlp_2"]["kernel"], params["mlp_2"]["bias"]
  for i in range(20):
    for j in range(20):
      d = np.array([xy[i, 1] - xy[j, 1], xy[i, 0] - xy[j, 0]])  # query i - key j
      u = np.sign(d) * psi(np.abs(d)) / (psi(np.maximum([3.0, 4.0], 3.6)) + 1e-6)
      np.testing.assert_allclose(bias[0, :, prefix + i, prefix + j], np.maximum(u @ w0 + b0, 0) @ w2 + b2,
                                 rtol=1e-5, atol=1e-5)
  # a shift of both tokens keeps the bias: every pair with the same offset has the same bias
  _, index = relative_offsets(grid)
  for k in np.unique(index):
    values = bias[0][:, prefix:, prefix:][:, index == k]
    np.testing.assert_allclose(values, values[:, :1].repeat(values.shape[1], 1), atol=1e-6)
  assert np.abs(bias[0, :, prefix + 0, prefix + 1] - bias[0, :, prefix + 1, prefix + 0]).max() > 1e-4  # signed


def test_progressive_interpolation():
  """Above the threshold the largest offset is +-1 at any grid (FIRE's interpolation), below it the same offset gives
  the same bias at any grid (the threshold's floor keeps short inputs unstretched)."""
  small, large = Fire(2, (4, 4), init_L=1.0), Fire(2, (8, 8), init_L=1.0)
  params = random_params(small, 16, scale=0.5)
  params["c"], params["L_multiplier"] = np.float32(0.1), np.float32(1.0)
  corner_small = fire_bias(small, params, 16)[0, :, 0, 15]  # offset (3, 3), the largest of the 4x4 grid
  corner_large = fire_bias(large, params, 64)[0, :, 0, 63]  # offset (7, 7)
  np.testing.assert_allclose(corner_small, corner_large, atol=1e-5)  # up to eps
  small, large = Fire(2, (4, 4), init_L=512.0), Fire(2, (8, 8), init_L=512.0)
  np.testing.assert_allclose(fire_bias(small, params, 16)[0, :, 0, 5], fire_bias(large, params, 64)[0, :, 0, 9],
                             atol=1e-6)  # offset (1, 1) on both grids
  assert np.abs(corner_small - fire_bias(small, params, 16)[0, :, 0, 15]).max() > 1e-4
  with pytest.raises(ValueError, match="15 tokens cannot hold the 4x4"):
    small.apply({"params": params}, 15)


def test_attention_adds_a_4d_bias_per_query_and_key():
  x = np.random.RandomState(0).standard_normal((2, 5, 8)).astype(np.float32)
  attention = Attention(2, return_attention=True)
  params = random_params(attention, x, scale=0.5, train=False)
  bias = np.random.RandomState(1).standard_normal((1, 2, 5, 5)).astype(np.float32)
  _, aux = attention.apply({"params": params}, x, train=False, bias=bias)
  _, plain = attention.apply({"params": params}, x, train=False)
  logits = np.log(np.asarray(plain["attn"]))  # softmax is shift invariant per row: compare normalised logits
  expected = jax.nn.softmax(logits + bias, axis=-1)
  np.testing.assert_allclose(np.asarray(aux["attn"]), np.asarray(expected), atol=1e-5)
  y_fast, _ = Attention(2).apply({"params": params}, x, train=False, bias=bias)
  y_attn, _ = attention.apply({"params": params}, x, train=False, bias=bias)
  np.testing.assert_allclose(np.asarray(y_fast), np.asarray(y_attn), atol=1e-5)


def test_vit_with_fire_trains_at_other_sizes():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=(32, 48), patch_size=16, embed_dim=16, depth=2,
                              num_heads=2, num_classes=3, pos_embed="fire")
  images = jnp.ones((2, 32, 48, 3))
  params = random_params(model, images, scale=0.1)
  assert params["encoder"]["blocks_1"]["fire"]["mlp_2"]["kernel"].shape == (32, 2) and "pos_embed" not in params
  per_block = (2 * 32 + 32) + (32 * 2 + 2) + 2  # mlp_0, mlp_2, c, L_multiplier
  plain = jaxvit.count_params(model.clone(pos_embed="none"))
  assert jaxvit.count_params(model) == plain + 2 * per_block

  def loss(p):
    logits, _ = model.apply({"params": p}, images, train=True, rngs={"dropout": jax.random.key(0)})
    return logits.sum()
  grads = jit_fast(jax.grad(loss), params)
  assert float(jnp.abs(grads["encoder"]["blocks_0"]["fire"]["c"])) > 0
  bf16 = model.clone(dtype=jnp.bfloat16)
  logits, _ = jit_fast(lambda p, x: bf16.apply({"params": p}, x), params, images)
  assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


@pytest.mark.parametrize("overrides,match", [
    (dict(pos_embed="fire+fire"), "pos_embed='fire\\+fire'"),
    (dict(pos_embed="fire", mixer="pooling", class_token=False, global_pool="avg"), "no RoPE, LRPE or FIRE"),
    (dict(pos_embed="fire", reduction=dict(kind="tome", r=4)), "reduction=.*None with pos_embed='fire'"),
])
def test_config_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_tiny_patch16_224", **overrides)
