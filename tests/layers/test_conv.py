"""Convolution + BatchNorm layers and their MAC count (grouped convolutions count their groups only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvit.bench.flops import count_macs
from jaxvit.layers import ConvBN, SqueezeExcite, avg_pool_ceil


@pytest.mark.parametrize("groups", [1, 4, 16])
@pytest.mark.parametrize("train", [False, True])
def test_grouped_conv_bn_macs(groups, train):
  layer = ConvBN(32, kernel_size=3, stride=2, groups=groups, train=train)
  x = jnp.zeros((2, 9, 9, 16))
  variables = layer.init(jax.random.key(0), x)
  macs = count_macs(layer, variables, x, mutable=["batch_stats"] if train else False)
  out = 2 * 5 * 5 * 32  # stride 2, padding 1: 9 -> 5
  assert macs["matmul"] == out * 3 * 3 * 16 // groups
  assert macs["norm"] == out * (4 if train else 2)  # fvcore: batch statistics cost 4, running ones 2


def test_squeeze_excite_macs_are_its_two_projections():
  layer = SqueezeExcite(rd_channels=4)
  x = jnp.ones((1, 7, 7, 16))
  assert count_macs(layer, layer.init(jax.random.key(0), x), x)["total"] == 16 * 4 + 4 * 16


def test_avg_pool_ceil_averages_the_pixels_an_edge_window_has():
  x = jnp.arange(9.0).reshape(1, 3, 3, 1)
  np.testing.assert_allclose(avg_pool_ceil(x)[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]])
