"""Shared by the dynamic tests: comparing a reduced model with the values the official code computed (see each test
module), random variables, and the training and bfloat16 checks."""

import jax
import jax.numpy as jnp
import numpy as np


def check_oracle(model, variables, images, first0, first1, argmax):
  """The first 8 logits of both images within 1e-4 of the official code's, and the same argmax."""
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x)[0])(variables, images))
  np.testing.assert_allclose(logits[:, :8], [first0, first1], atol=1e-4)
  np.testing.assert_array_equal(logits.argmax(1), argmax)


def random_variables(model, seed: int = 0, std: float = 0.1):
  """Random variables of `model`'s shapes without running its initialisers (a jitted init compiles for seconds):
  LayerNorm scales 1 + std N(0, 1), every other leaf std N(0, 1)."""
  import jaxvit
  rng = np.random.RandomState(seed)
  shapes = jax.eval_shape(lambda: jaxvit.init_variables(model))
  return jax.tree_util.tree_map_with_path(
      lambda path, s: ((path[-1].key == "scale") + std * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def train_grads(model, params, images, labels):
  """`(grads, out)` of the train-mode cross-entropy of `model` on `images` and `labels`, jitted; asserts the loss and
  every gradient finite."""
  def loss(params):
    logits, out = model.apply({"params": params}, images, train=True)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)), out

  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  return grads, out


def check_bfloat16(model, variables, images, atol=0.05):
  """`model` in bfloat16 gives bfloat16 logits within `atol` of its float32 logits."""
  f32, bf16 = (jax.jit(lambda v, x, m=m: m.apply(v, x)[0])(variables, images)
               for m in (model, model.clone(dtype=jnp.bfloat16)))
  assert bf16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(bf16, np.float32), f32, atol=atol)
