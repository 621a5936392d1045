import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxvit
from jaxvit.convert.mapping import loop_to_scan
from jaxvit.layers import sincos_2d

TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=32, patch_size=8, num_classes=4)


def tiny(name="deit_tiny_patch16_224", **kw):
  return jaxvit.create_model(name, **{**TINY, **kw})


def images(batch=2, size=32, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def randomize(variables, seed=0):
  """Random values everywhere (heads start at zero, LayerScale at 1e-6): every path matters."""
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_scan_remat_matches_loop():
  loop = tiny("deit3_small_patch16_224", drop_path_rate=0.2)
  scan = loop.clone(scan=True, remat=True)
  v_loop = randomize(jaxvit.init_variables(loop))
  v_scan = {"params": loop_to_scan(jax.device_get(v_loop["params"]))}
  assert jax.tree.structure(v_scan) == jax.tree.structure(jaxvit.init_variables(scan))
  x = images()
  (a, out_a), (b, out_b) = loop.apply(v_loop, x), scan.apply(v_scan, x)
  np.testing.assert_allclose(a, b, atol=1e-5)
  np.testing.assert_allclose(out_a["block1"], out_b["block1"], atol=1e-5)

  def loss(model, params):
    return model.apply({"params": params}, x)[0].sum()

  g_loop = loop_to_scan(jax.device_get(jax.grad(lambda p: loss(loop, p))(v_loop["params"])))
  g_scan = jax.grad(lambda p: loss(scan, p))(v_scan["params"])
  for ga, gb in zip(jax.tree.leaves(g_loop), jax.tree.leaves(g_scan)):
    np.testing.assert_allclose(ga, gb, atol=1e-4, rtol=1e-4)


def test_scan_drop_path_trains():
  model = tiny(drop_path_rate=0.5, scan=True)
  v = jaxvit.init_variables(model)
  run = lambda seed: model.apply(v, images(8), train=True, rngs={"drop_path": jax.random.key(seed)})[1]["block2"]
  assert not np.allclose(run(0), run(1))


def test_distilled_returns_mean_of_both_heads():
  model = tiny("deit_tiny_distilled_patch16_224")
  v = randomize(jaxvit.init_variables(model))
  for train in (False, True):
    logits, out = model.apply(v, images(), train=train)
    np.testing.assert_allclose(logits, (out["logits_cls"] + out["logits_dist"]) / 2, atol=1e-6)
    assert not np.allclose(out["logits_cls"], out["logits_dist"])


def test_attention_maps_on_request_and_same_logits():
  base = tiny()
  v = randomize(jaxvit.init_variables(base))
  logits, out = base.apply(v, images())
  assert "attn0" not in out
  logits_att, out = base.clone(return_attention=True).apply(v, images())
  np.testing.assert_allclose(logits, logits_att, atol=1e-5)  # both attention code paths agree
  n = 1 + 16
  assert out["attn2"].shape == (2, 2, n, n) and out["keys2"].shape == (2, n, 16)
  np.testing.assert_allclose(out["attn2"].sum(-1), 1.0, atol=1e-5)


def test_drop_path_drops_whole_examples_and_rescales():
  from jaxvit.layers import drop_path

  class Branch(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return drop_path(self, x, 0.5, train=train)

  x = jnp.ones((4000, 3))
  y = Branch().apply({}, x, True, rngs={"drop_path": jax.random.key(0)})
  rows = np.asarray(y)
  assert set(np.unique(rows)) == {0.0, 2.0} and (rows == rows[:, :1]).all()
  assert abs((rows[:, 0] == 0).mean() - 0.5) < 0.05
  np.testing.assert_array_equal(Branch().apply({}, x, False), x)


def test_bfloat16_compute_close_to_float32():
  model = tiny()
  v = randomize(jaxvit.init_variables(model))
  ref = model.apply(v, images())[0]
  got = model.clone(dtype=jnp.bfloat16).apply(v, images())[0]
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), ref, atol=0.1 * float(jnp.abs(ref).max()))


def test_bfloat16_params():
  v = jaxvit.init_variables(tiny(param_dtype=jnp.bfloat16))
  assert {x.dtype for x in jax.tree.leaves(v)} == {jnp.dtype(jnp.bfloat16)}


def test_sincos_is_fixed_and_avg_pool_uses_fc_norm():
  model = tiny(pos_embed="sincos", class_token=False, global_pool="avg")
  params = jaxvit.init_variables(model)["params"]
  assert "pos_embed" not in params and "fc_norm" in params and "norm" not in params
  assert "tokens" not in params
  logits, out = model.apply(randomize({"params": params}), images())
  assert out["encoded"].shape == (2, 16, 32) and np.isfinite(logits).all()


def test_sincos_table():
  table = sincos_2d((3, 4), 8)[0]
  assert table.shape == (12, 8)
  x, y = np.meshgrid(np.arange(4), np.arange(3))
  np.testing.assert_allclose(table[:, 0], np.sin(x.reshape(-1)), atol=1e-6)  # lowest frequency is 1
  np.testing.assert_allclose(table[:, 6], np.cos(y.reshape(-1)), atol=1e-6)


def test_register_tokens_are_prefix_tokens():
  model = tiny(reg_tokens=4, global_pool="avg")
  v = jaxvit.init_variables(model)
  assert v["params"]["tokens"]["reg_token"].shape == (1, 4, 32)
  assert v["params"]["pos_embed"].shape == (1, 1 + 4 + 16, 32)
  _, out = model.apply(v, images())
  assert out["encoded"].shape == (2, 21, 32)


def test_wrong_input_size_is_a_clear_error():
  model = tiny()
  with pytest.raises(ValueError, match="input images are 48x48 but the model was built with img_size=32"):
    model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))


def test_sharded_forward_matches_single_device():
  """Logical axis rules: batch over `data`, heads and MLP over `model` (tensor parallel)."""
  assert jax.device_count() == 8
  model = tiny(embed_dim=64, num_heads=4)
  rules = (("batch", "data"), ("heads", "model"), ("mlp", "model"), ("classes", "model"))
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  x = images(8)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  v = randomize(jaxvit.init_variables(model))
  ref = model.apply(v, x)[0]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    v_sharded = jax.device_put(v, shardings)
    qkv = v_sharded["params"]["encoder"]["blocks_0"]["attn"]["qkv"]["kernel"]
    assert qkv.sharding.spec == P(None, None, "model", None)
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    got = jax.jit(lambda v, x: model.apply(v, x)[0])(v_sharded, x_sharded)
  np.testing.assert_allclose(got, ref, atol=1e-5)
