"""SwiftFormer (jaxvit.models.swiftformer): depthwise conv as shifted adds against XLA's grouped conv (values,
gradients, counted MACs), additive attention against the formula, the distillation heads, other input sizes,
BatchNorm state and clear config errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import jaxpr_macs
from jaxvit.layers.additive_attention import EfficientAdditiveAttention
from jaxvit.layers.depthwise_conv import depthwise_conv2d
from fast_jit import jit_fast


def random_variables(model, x):
  """Variables of `model.init`'s shapes filled from numpy (no compiled init); running variances positive."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), x)))
  rs = np.random.RandomState(0)

  def fill(path, shape):
    x = (0.1 * rs.standard_normal(shape.shape)).astype(shape.dtype)
    return np.abs(x) + 1.0 if path[-1].key == "var" else x
  return jax.tree_util.tree_map_with_path(fill, shapes)


def perturbed(variables, seed=2):
  """Every leaf moved off its init by its own noise (zero heads and unit gains would hide paths)."""
  leaves, tree = jax.tree.flatten(nn.meta.unbox(variables))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def grouped_conv(x, kernel):
  k = kernel.shape[0]
  return jax.lax.conv_general_dilated(x, kernel[:, :, None, :], (1, 1), ((k // 2, k // 2),) * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


@pytest.mark.parametrize("k", [3, 5])
def test_depthwise_conv_matches_grouped_conv_values_grads_and_macs(k):
  rs = np.random.RandomState(k)
  x = jnp.asarray(rs.standard_normal((2, 7, 6, 4)), jnp.float32)
  kernel = jnp.asarray(rs.standard_normal((k, k, 4)), jnp.float32)
  np.testing.assert_allclose(depthwise_conv2d(x, kernel), grouped_conv(x, kernel), atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for ours, ref in zip(jax.grad(loss(depthwise_conv2d), (0, 1))(x, kernel),
                       jax.grad(loss(grouped_conv), (0, 1))(x, kernel)):
    np.testing.assert_allclose(ours, ref, atol=1e-4)
  # the MAC counter sees what fvcore counts for a depthwise conv: k^2 per output element
  assert jaxpr_macs(jax.make_jaxpr(depthwise_conv2d)(x, kernel)) == x.size * k * k


def test_additive_attention_matches_formula_and_permutes_with_tokens():
  layer = EfficientAdditiveAttention(8)
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  params = perturbed(layer.init(jax.random.key(1), x)["params"])
  lin = lambda name, v: v @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
  unit = lambda v, axis: v / np.linalg.norm(v, axis=axis, keepdims=True)
  xn = np.asarray(x, np.float64)
  q, k = unit(lin("to_query", xn), -1), unit(lin("to_key", xn), -1)
  alpha = unit(q @ np.asarray(params["w_g"]) / np.sqrt(8), 1)  # [B, N, 1], normalised over the tokens
  expected = lin("final", lin("proj", (alpha * q).sum(1, keepdims=True) * k) + q)
  out = layer.apply({"params": params}, x)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  perm = np.array([3, 0, 4, 1, 2])
  np.testing.assert_allclose(layer.apply({"params": params}, x[:, perm]), out[:, perm], atol=1e-5)


@pytest.fixture(scope="module")
def small():
  model = jaxvit.create_model("swiftformer_xs", num_classes=4, depths=(2, 1, 1, 1), img_size=32)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  return model, random_variables(model, x), x


def test_logits_are_mean_of_class_and_distillation_heads(small):
  model, variables, x = small
  logits, out = jit_fast(model.apply, variables, x)
  assert not np.allclose(out["logits_cls"], out["logits_dist"])
  np.testing.assert_allclose(logits, (out["logits_cls"] + out["logits_dist"]) / 2, atol=1e-6)
  assert logits.shape == (2, 4) and out["pre_logits"].shape == (2, model.num_features)


def test_train_mode_updates_batch_stats_and_eval_reads_them(small):
  model, variables, x = small
  x = 3.0 + x

  def step(variables):
    _, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return new, model.apply(variables, x)[0], model.apply({**variables, **new}, x)[0]

  new, before, after = jit_fast(step, variables)
  assert jax.tree.structure(new["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
  assert not np.allclose(new["batch_stats"]["stem_1"]["mean"], variables["batch_stats"]["stem_1"]["mean"])
  assert not np.allclose(before, after)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_any_input_size_gives_stage_maps_and_no_heads_without_classes(dtype):
  model = jaxvit.create_model("swiftformer_xs", num_classes=0, depths=(1, 1, 1, 2), dtype=dtype)
  x = jnp.ones((2, 72, 40, 3))
  variables = random_variables(model, x)
  pooled, out = jit_fast(model.apply, variables, x)
  sizes = [(18, 10), (9, 5), (5, 3), (3, 2)]  # stride-2 3x3 convs with padding 1 round up
  assert [out[f"stage{i}"].shape for i in range(4)] == [(2, h, w, c) for (h, w), c in zip(sizes, model.embed_dims)]
  assert pooled.dtype == dtype and np.array_equal(pooled, out["logits"])
  assert not {"head", "head_dist"} & set(variables["params"])
  assert np.isfinite(np.asarray(pooled, np.float32)).all()


@pytest.mark.parametrize("field,value,match", [
    ("embed_dims", (48, 56, 112), "embed_dims=\\(48, 56, 112\\); accepted: 4 stage widths"),
    ("depths", (3, 0, 6, 4), "depths=\\(3, 0, 6, 4\\); accepted: one or more stage depths >= 1"),
    ("proj_drop_rate", -0.1, "proj_drop_rate=-0.1; accepted: \\[0, 1\\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match="SwiftFormer: " + match):
    jaxvit.create_model("swiftformer_xs", **{field: value})
