"""Parameters of a module's shapes filled from numpy: `eval_shape` traces `init` without compiling it (a jitted
random init compiles for longer than these small configs run)."""

import flax.linen as nn
import jax
import numpy as np


def random_params(module, *inputs, scale=0.2, **kwargs):
  """`module.init(key, *inputs, **kwargs)["params"]`'s shapes, each leaf `scale` N(0, 1) float32 (seed 0)."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, **kwargs)))["params"]
  rs = np.random.RandomState(0)
  return jax.tree.map(lambda s: (scale * rs.standard_normal(s.shape)).astype(np.float32), shapes)
