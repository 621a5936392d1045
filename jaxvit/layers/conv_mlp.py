"""PVTv2's convolutional feed-forward network (Wang et al. 2021, arXiv:2106.13797, sec. 3.3, eq. 1):
a 3x3 depthwise convolution between the MLP's two linear layers gives the tokens their position (no position
embedding). timm's `pvt_v2.py` (`MlpWithDepthwiseConv`) is the file followed."""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.init import dense
from jaxvit.layers.mlp import gelu


class MlpWithDepthwiseConv(nn.Module):
  """On a token map `[B, H, W, C]`: fc1 -> (ReLU if `extra_relu`, PVTv2-li) -> DWConv3x3 -> act -> dropout ->
  fc2 -> dropout. Submodules `fc1`, `dwconv` (kernel `[3, 3, 1, hidden]`, bias), `fc2`."""
  hidden_dim: int
  extra_relu: bool = False
  act: Callable = gelu
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = dense(self.hidden_dim, ("embed", "mlp"), name="fc1", **kw)(x)
    h = nn.relu(h) if self.extra_relu else h
    h = self.act(DepthwiseConv(3, name="dwconv", **kw)(h))
    h = nn.Dropout(self.drop_rate)(h, deterministic=not train)
    h = dense(x.shape[-1], ("mlp", "embed"), name="fc2", **kw)(h)
    return nn.Dropout(self.drop_rate)(h, deterministic=not train)
