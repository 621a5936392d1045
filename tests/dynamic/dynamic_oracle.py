"""Comparing a reduced model with the values the official code computed (see each test module)."""

import jax
import numpy as np


def check_oracle(model, variables, images, first0, first1, argmax):
  """The first 8 logits of both images within 1e-4 of the official code's, and the same argmax."""
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x)[0])(variables, images))
  np.testing.assert_allclose(logits[:, :8], [first0, first1], atol=1e-4)
  np.testing.assert_array_equal(logits.argmax(1), argmax)
