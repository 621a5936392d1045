"""Registry-wide tests (timm style): every model is built, run forward and backward, and counted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from published import PUBLISHED

MODELS = jaxvit.list_models()


def small_size(model) -> int:
  """The smallest input the model allows: a 2x2 grid of patches."""
  return 2 * model.patch_size


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_small(name):
  model = jaxvit.create_model(name, num_classes=5, drop_rate=0.1, drop_path_rate=0.1)
  # scanned block stacks compile once per model, which keeps a large registry affordable in CI
  model = model.clone(img_size=small_size(model), **({"scan": True} if hasattr(model, "scan") else {}))
  variables = jaxvit.init_variables(model)
  images = jax.random.normal(jax.random.key(1), (2, model.img_size, model.img_size, 3))
  labels = jnp.array([1, 3])

  def loss(params):
    logits, out = model.apply({"params": params}, images, train=True,
                              rngs={"dropout": jax.random.key(2), "drop_path": jax.random.key(3)})
    assert logits.shape == (2, 5) and out["pre_logits"].shape == (2, model.embed_dim)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

  value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
  assert np.isfinite(value)
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0


@pytest.mark.parametrize("name", MODELS)
def test_params_and_gmacs_match_published(name):
  params_m, gmacs = PUBLISHED[name]
  model = jaxvit.create_model(name)
  assert round(jaxvit.count_params(model) / 1e6, 2) == params_m
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  images = jax.ShapeDtypeStruct((1, model.img_size, model.img_size, 3), jnp.float32)
  assert round(count_macs(model, variables, images)["total"] / 1e9, 2) == gmacs
