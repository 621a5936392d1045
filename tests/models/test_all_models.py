"""Registry-wide tests (timm style): every model is counted against its published numbers; the smallest
model of each code path runs forward and backward at a CI-cheap size (`zoo.small`)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from fast_jit import FAST_COMPILE
from published import PUBLISHED
from zoo import representatives, small

MODELS = jaxvit.list_models()


def random_variables(model, seed=0):
  """Variables of `model.init`'s shapes filled from numpy: compiling a CNN's per-parameter random init
  takes longer than its forward and backward. Running variances stay positive."""
  images = jnp.zeros(jaxvit.utils.input_shape(model))
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False)))
  rs = np.random.RandomState(seed)

  def fill(path, shape):
    x = (0.1 * rs.standard_normal(shape.shape)).astype(shape.dtype)
    return np.abs(x) + 1.0 if path[-1].key == "var" else x
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("name", representatives(MODELS))
def test_forward_backward_small(name):
  model = small(jaxvit.create_model(name, num_classes=5, drop_rate=0.1, drop_path_rate=0.1))
  variables = random_variables(model)
  params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  images = jax.random.normal(jax.random.key(1), (2, model.img_size, model.img_size, 3))
  labels = jnp.array([1, 3])

  def loss(params):
    (logits, out), new_state = model.apply({"params": params, **state}, images, train=True, mutable=list(state),
                                           rngs={"dropout": jax.random.key(2), "drop_path": jax.random.key(3)})
    assert logits.shape == (2, 5) and out["pre_logits"].shape == (2, model.num_features)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)  # BatchNorm updates its running stats
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)), new_state

  step = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params).compile(FAST_COMPILE)
  (value, new_state), grads = step(params)
  assert np.isfinite(value)
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0
  changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state))]
  assert all(changed)


@pytest.mark.parametrize("name", MODELS)
def test_params_and_gmacs_match_published(name):
  params_m, gmacs = PUBLISHED[name]
  model = jaxvit.create_model(name)
  assert round(jaxvit.count_params(model) / 1e6, 2) == params_m
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  images = jax.ShapeDtypeStruct(jaxvit.utils.input_shape(model), jnp.float32)
  assert round(count_macs(model, variables, images)["total"] / 1e9, 2) == gmacs
