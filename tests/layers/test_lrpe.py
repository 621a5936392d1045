"""LRPE (jaxvit.layers.lrpe, `pos_embed="lrpe"`): the unitary encoding's logits are sum_j q_j k_j cos(phi_s - phi_t),
invariant to shifting every position (the relative property) and even in the offset, where RoPE's are not; norms
kept, prefix tokens at angle 0, the axial initialisation; the attention path; the ViT with LRPE forward and backward,
combinations, errors, bfloat16 and its parameter count."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers import Attention, apply_rope
from jaxvit.layers.lrpe import Lrpe, apply_lrpe, lrpe_angles
from jaxvit.layers.rope import axial_freqs, patch_coords
from fast_jit import jit_fast
from numpy_params import random_params


def lrpe_logits(q, k, theta, coords):
  """`[H, N, N]` q' k'^T of single-batch `q`, `k` `[H, N, d]` at `coords` `[N, 2]` (no prefix tokens)."""
  angles = lrpe_angles(theta, coords)
  qt, kt = apply_lrpe(q[None], jnp.sin(angles), jnp.cos(angles)), apply_lrpe(k[None], jnp.sin(angles), jnp.cos(angles))
  return np.asarray(jnp.einsum("hqd,hkd->hqk", qt[0], kt[0]))


def test_logits_are_the_cosine_kernel_of_the_angle_difference():
  rs = np.random.RandomState(0)
  q, k = rs.standard_normal((2, 6, 4)).astype(np.float32), rs.standard_normal((2, 6, 4)).astype(np.float32)
  theta = rs.uniform(-1, 1, (2, 2, 4)).astype(np.float32)
  coords = patch_coords((2, 3))
  phi = np.einsum("na,ahd->hnd", coords, theta)  # [H, N, d]
  expected = np.einsum("hsd,htd,hstd->hst", q, k, np.cos(phi[:, :, None] - phi[:, None, :]))
  np.testing.assert_allclose(lrpe_logits(q, k, theta, coords), expected, atol=1e-5)


def test_shifted_positions_keep_the_logits_and_the_kernel_is_even():
  """q_s W_s^H W_t k_t depends on t - s only: moving every patch by (5, -3) changes nothing. The cosine kernel is
  even in the offset (same content, offsets +d and -d score alike); RoPE's is not."""
  rs = np.random.RandomState(1)
  q, k = rs.standard_normal((3, 12, 8)).astype(np.float32), rs.standard_normal((3, 12, 8)).astype(np.float32)
  theta = rs.uniform(-1, 1, (2, 3, 8)).astype(np.float32)
  coords = patch_coords((3, 4))
  np.testing.assert_allclose(lrpe_logits(q, k, theta, coords + np.float32([5, -3])),
                             lrpe_logits(q, k, theta, coords), atol=1e-4)
  same_q, same_k = np.repeat(q[:, :1], 12, 1), np.repeat(k[:, :1], 12, 1)  # one content at every position
  logits = lrpe_logits(same_q, same_k, theta, coords)
  np.testing.assert_allclose(logits[:, 5, 6], logits[:, 5, 4], atol=1e-5)  # key one column right vs left
  angles = np.einsum("na,ahd->hnd", coords, axial_freqs(8, 10.0))  # RoPE-Axial's, each pair's angle twice
  sin, cos = np.repeat(np.sin(angles), 2, -1), np.repeat(np.cos(angles), 2, -1)
  rq, rk = apply_rope(same_q[None], sin, cos)[0], apply_rope(same_k[None], sin, cos)[0]
  rope_logits = np.asarray(jnp.einsum("hqd,hkd->hqk", rq, rk))
  assert np.abs(rope_logits[:, 5, 6] - rope_logits[:, 5, 4]).max() > 1e-2


def test_prefix_tokens_norms_and_axial_init():
  x = np.random.RandomState(2).standard_normal((1, 2, 1 + 6, 4)).astype(np.float32)
  layer = Lrpe((2, 3), num_heads=2, head_dim=4)
  params = layer.init(jax.random.key(0))["params"]
  theta = np.asarray(flax.linen.meta.unbox(params)["theta"])
  np.testing.assert_allclose(theta[0, :, :2], [[1.0, 0.1]] * 2, rtol=1e-6)  # x turns the first half at 100^(-k/2)
  assert not theta[0, :, 2:].any() and not theta[1, :, :2].any() and np.all(theta[1, :, 2:] > 0)
  sin, cos = layer.apply({"params": params})
  y = np.asarray(apply_lrpe(x, sin, cos))
  assert y.shape == (1, 2, 7, 8)
  np.testing.assert_array_equal(y[..., 0, :4], x[..., 0, :])  # the class token: [x, 0]
  np.testing.assert_array_equal(y[..., 0, 4:], 0)
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_attention_takes_a_function_of_q_and_k():
  x = np.random.RandomState(3).standard_normal((2, 7, 8)).astype(np.float32)
  attention = Attention(2, return_attention=True)
  params = random_params(attention, x, scale=0.5, train=False)
  layer = Lrpe((2, 3), num_heads=2, head_dim=4)
  sin, cos = layer.apply({"params": random_params(layer, scale=0.5)})
  y, aux = attention.apply({"params": params}, x, train=False, rope=lambda t: apply_lrpe(t, sin, cos))
  qkv = np.einsum("bnc,cthd->tbhnd", x, params["qkv"]["kernel"]) + params["qkv"]["bias"][:, None, :, None]
  q, k = (apply_lrpe(t, sin, cos) for t in qkv[:2])  # the first token a prefix (class) token
  expected = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) / 2.0, axis=-1)  # 1 / sqrt(head_dim 4)
  np.testing.assert_allclose(np.asarray(aux["attn"]), np.asarray(expected), atol=1e-5)
  y_fast, _ = Attention(2).apply({"params": params}, x, train=False, rope=lambda t: apply_lrpe(t, sin, cos))
  np.testing.assert_allclose(np.asarray(y_fast), np.asarray(y), atol=1e-5)
  y_plain, _ = Attention(2).apply({"params": params}, x, train=False)
  assert np.abs(np.asarray(y_plain) - np.asarray(y)).max() > 1e-3


def test_vit_with_lrpe_trains_and_combines():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=(32, 48), embed_dim=16, depth=2, num_heads=2,
                              num_classes=3, pos_embed="learn+lrpe+fire")
  images = jnp.ones((2, 32, 48, 3))
  params = random_params(model, images, scale=0.1)
  assert params["encoder"]["blocks_0"]["lrpe"]["theta"].shape == (2, 2, 8)
  assert jaxvit.count_params(model) == jaxvit.count_params(model.clone(pos_embed="learn+fire")) + 2 * (2 * 2 * 8)

  def loss(p):
    return model.apply({"params": p}, images)[0].sum()
  grads = jit_fast(jax.grad(loss), params)
  assert float(jnp.abs(grads["encoder"]["blocks_1"]["lrpe"]["theta"]).sum()) > 0
  bf16 = model.clone(dtype=jnp.bfloat16)
  logits, _ = jit_fast(lambda p, x: bf16.apply({"params": p}, x), params, images)
  assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


@pytest.mark.parametrize("overrides,match", [
    (dict(pos_embed="lrpe+rope_axial"), "pos_embed='lrpe\\+rope_axial'"),
    (dict(pos_embed="lrpe", mixer="pooling", class_token=False, global_pool="avg"), "no RoPE, LRPE or FIRE"),
    (dict(pos_embed="lrpe", reduction=dict(kind="evit", keep_rate=0.7)), "reduction=.*None with pos_embed='lrpe'"),
])
def test_config_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_tiny_patch16_224", **overrides)
