"""PVTv2 (jaxvit.models.pvt_v2): adaptive pooling and spatial-reduction attention (plain and linear) against
torch / timm on maps that do not divide evenly, the model at a non-square odd size against timm, stage maps,
bfloat16 and clear config errors."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert.mapping import default_timm_name, torch_to_flax_layout
from jaxvit.layers.sr_attention import SpatialReductionAttention, adaptive_avg_pool
from fast_jit import jit_fast


def params_from_torch(module, torch_module, *inputs):
  """`module`'s params filled from a torch module's state_dict through timm's names (the converter's layouts)."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, train=False)))["params"]
  state = {k: v.detach().numpy() for k, v in torch_module.state_dict().items()}
  flat = flax.traverse_util.flatten_dict(shapes, sep="/")
  return flax.traverse_util.unflatten_dict(
      {p: torch_to_flax_layout(state[default_timm_name(p)], s.shape) for p, s in flat.items()}, sep="/")


def perturb(torch_module):
  import torch
  torch.manual_seed(0)
  with torch.no_grad():
    for p in torch_module.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return torch_module.eval()


@pytest.mark.parametrize("hw", [(14, 21), (9, 5), (3, 2)])  # divisible, uneven bins, bins overlapping (upsampling)
def test_adaptive_avg_pool_matches_torch(hw):
  torch = pytest.importorskip("torch")
  x = np.random.RandomState(0).standard_normal((2, *hw, 3)).astype(np.float32)
  expected = torch.nn.AdaptiveAvgPool2d(7)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), 7), expected, atol=1e-6)


@pytest.mark.parametrize("sr_ratio,linear", [(4, False), (1, False), (1, True)])
def test_spatial_reduction_attention_matches_timm(sr_ratio, linear):
  """On a 9x11 map: the stride-4 reduction drops the last row / columns as torch's conv does; the linear variant
  pools to 7x7 through uneven bins."""
  pytest.importorskip("timm")
  import torch
  from timm.models.pvt_v2 import Attention
  reference = perturb(Attention(32, num_heads=4, sr_ratio=sr_ratio, linear_attn=linear))
  x = np.random.RandomState(1).standard_normal((2, 9, 11, 32)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.reshape(2, 99, 32)), (9, 11)).numpy().reshape(2, 9, 11, 32)
  layer = SpatialReductionAttention(4, sr_ratio, linear)
  params = params_from_torch(layer, reference, x)
  np.testing.assert_allclose(jit_fast(lambda p, x: layer.apply({"params": p}, x, train=False), params, x), expected,
                             atol=2e-5)


@pytest.mark.parity
def test_non_square_odd_input_matches_timm():
  """72x40 px: stage maps 18x10 ... 3x2, every reduction and the 7x7 pool uneven; the linear (li) variant."""
  pytest.importorskip("timm")
  from convert.timm_reference import perturbed, timm_logits
  from jaxvit.convert import from_timm
  reference = perturbed("pvt_v2_b2_li", depths=(1, 2, 1, 1))
  model, variables = from_timm(reference, depths=(1, 2, 1, 1))
  images = np.random.RandomState(0).standard_normal((2, 72, 40, 3)).astype(np.float32)
  logits, out = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  expected = timm_logits(reference, images)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
  assert [out[f"stage{i}"].shape[1:3] for i in range(4)] == [(18, 10), (9, 5), (5, 3), (3, 2)]


def test_bfloat16_stage_maps_and_features():
  model = jaxvit.create_model("pvt_v2_b0", num_classes=0, depths=(1, 1, 1, 1), img_size=64, dtype=jnp.bfloat16)
  (pooled, out), _ = jit_fast(lambda x: model.init_with_output(jax.random.key(0), x), jnp.ones((2, 64, 64, 3)))
  assert [out[f"stage{i}"].shape for i in range(4)] == [(2, 16, 16, 32), (2, 8, 8, 64), (2, 4, 4, 160), (2, 2, 2, 256)]
  assert pooled.shape == (2, model.num_features) and pooled.dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(pooled, np.float32)).all()


@pytest.mark.parametrize("field,value,match", [
    ("embed_dims", (32, 64, 160), "embed_dims=\\(32, 64, 160\\); accepted: 4 values, one per stage"),
    ("num_heads", (1, 2, 3, 8), "num_heads=\\(1, 2, 3, 8\\); accepted: divisors of embed_dims"),
    ("img_size", 16, "img_size=16; accepted: sizes whose stage maps \\[\\(4, 4\\), .* are at least sr_ratios"),
    ("attn_drop_rate", 1.0, "attn_drop_rate=1.0; accepted: \\[0, 1\\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match="PyramidVisionTransformerV2: " + match):
    jaxvit.create_model("pvt_v2_b0", **{field: value})
