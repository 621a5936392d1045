"""The fast paths of attention and GELU against their textbook formulas, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvit import layers


def test_gelu_matches_jax_exact_gelu_and_its_gradient():
  x = jnp.linspace(-9.0, 9.0, 2001)
  np.testing.assert_allclose(layers.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
  grad = jax.vmap(jax.grad(layers.gelu))(x)
  np.testing.assert_allclose(grad, jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x), atol=1e-6)


def test_attention_fast_path_matches_softmax_formula_in_value_and_gradient():
  """The training path (max without gradient, normalised after AV) against plain softmax(QK^T)V."""
  x = jax.random.normal(jax.random.key(0), (2, 17, 32))
  fast = layers.Attention(num_heads=4)
  plain = layers.Attention(num_heads=4, return_attention=True)
  params = fast.init(jax.random.key(1), x, train=False)

  def loss(module, params, x):
    y, _ = module.apply(params, x, train=True)
    return jnp.sum(jnp.sin(y))

  np.testing.assert_allclose(fast.apply(params, x, train=True)[0], plain.apply(params, x, train=True)[0], atol=1e-5)
  fast_grads = jax.grad(loss, argnums=(1, 2))(fast, params, x)
  plain_grads = jax.grad(loss, argnums=(1, 2))(plain, params, x)
  for a, b in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(a, b, atol=1e-5)
