"""Performer's FAVOR+ and Linformer (`jaxvit.layers.linear_attention`): the estimator converges to softmax
attention, the stabiliser cancels, Linformer with identity projections is exact attention, and their cost is
linear in the tokens."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.bench.flops import count_macs
from jaxvit.layers.attention import Attention
from jaxvit.layers.linear_attention import (LinformerAttention, PerformerAttention, favor_attention,
                                            orthogonal_directions, positive_features)
from jaxvit.train.optim import decay_mask


def _softmax_attention(params, x, num_heads):
  return Attention(num_heads).apply({"params": params}, x, train=False)[0]


def test_favor_is_the_normalised_product_of_the_features():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 7, 4)) for i in range(3))
  w = orthogonal_directions(jax.random.key(3), (6, 4))
  qf, kf = positive_features(q, w), positive_features(k, w)
  scores = np.einsum("btm,bsm->bts", qf, kf)
  expected = np.einsum("bts,bsd->btd", scores / scores.sum(-1, keepdims=True), v)
  np.testing.assert_allclose(favor_attention(qf, kf, v, 0.0), expected, rtol=1e-5)
  # the stabiliser is a constant per sequence: the same attention
  stable = favor_attention(positive_features(q, w, True), positive_features(k, w, True), v, 0.0)
  np.testing.assert_allclose(stable, expected, rtol=1e-5)


def test_orthogonal_directions_come_in_orthogonal_blocks_of_norm_sqrt_d():
  w = np.asarray(orthogonal_directions(jax.random.key(0), (10, 4)))
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), 2.0, rtol=1e-5)
  for block in (w[:4], w[4:8]):
    np.testing.assert_allclose(block @ block.T, 4 * np.eye(4), atol=1e-4)


def test_performer_converges_to_softmax_attention_with_more_features():
  x = 2.0 * jax.random.normal(jax.random.key(0), (2, 10, 16))
  errors = {}
  for m in (8, 4096):
    layer = PerformerAttention(2, nb_features=m)
    params = nn.unbox(layer.init(jax.random.key(1), x)["params"])
    exact = _softmax_attention({k: params[k] for k in ("qkv", "proj")}, x, 2)
    errors[m] = float(np.abs(layer.apply({"params": params}, x) - exact).max() / np.abs(exact).max())
  assert errors[4096] < 0.05 and errors[8] > 2 * errors[4096], errors  # Monte Carlo error ~ 1 / sqrt(m)
  grads = jax.grad(lambda p: layer.apply({"params": p}, x).sum())(params)
  assert not np.any(np.asarray(grads["random_features"])) and np.any(np.asarray(grads["qkv"]["kernel"]))
  assert not decay_mask(params)["random_features"]  # frozen: no weight decay either


def test_linformer_with_identity_projections_is_softmax_attention():
  x = jax.random.normal(jax.random.key(0), (2, 6, 8))
  layer = LinformerAttention(2, k=6)
  params = nn.unbox(layer.init(jax.random.key(1), x)["params"])
  assert params["proj_k"].shape == params["proj_v"].shape == (6, 6)
  params = dict(params, proj_k=jnp.eye(6), proj_v=jnp.eye(6))
  exact = _softmax_attention({k: params[k] for k in ("qkv", "proj")}, x, 2)
  np.testing.assert_allclose(layer.apply({"params": params}, x), exact, atol=1e-5)


def test_cost_grows_linearly_with_the_tokens():
  def macs(layer, n, **kwargs):
    x = jax.ShapeDtypeStruct((1, n, 64), jnp.float32)
    variables = jax.eval_shape(lambda x: layer.init(jax.random.key(0), x, **kwargs), x)
    return count_macs(layer, variables, x, **kwargs)["total"]
  for layer in (PerformerAttention(2), LinformerAttention(2, k=32)):
    assert macs(layer, 1024) / macs(layer, 256) < 4.01, layer  # 4x the tokens: at most 4x the MACs
  assert macs(Attention(2), 1024, train=False) / macs(Attention(2), 256, train=False) > 5  # QK^T, AV: quadratic
