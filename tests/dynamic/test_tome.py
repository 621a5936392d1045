"""ToMe (`jaxvit.dynamic.tome`) on the ViT: the official patch's logits, schedules, token counts,
source tracing, training under jit, and errors.

TOME_ORACLE: `facebookresearch/ToMe` `tome.patch.timm` applied to timm's `deit_small_patch16_224`
(torch.manual_seed(0) weights, each moved by 0.02 N(0, 1) as in the parity tests), run once on the
parity tests' two images: each setting's first 8 logits per image and the argmax.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.dynamic import tome
from dynamic_oracle import check_oracle, train_grads

TOME_ORACLE = {  # (r, prop_attn): (first 8 logits of image 0, of image 1, argmax)
    (13, True): ([1.4025275, -0.3861511, -0.7810811, -0.0536701, 0.1588343, 1.0104247, 0.1624055, -0.6425885],
                 [0.866948, -0.5288251, -1.1205093, -0.2230304, 0.2886687, 1.1152964, -0.1208384, -0.7307962],
                 [629, 837]),
    (13, False): ([1.393934, -0.3499561, -0.705924, -0.1330449, 0.1205027, 1.0370979, 0.2459357, -0.5149736],
                  [0.8986315, -0.4782477, -1.0293705, -0.2766819, 0.230764, 1.14908, -0.1769237, -0.5127007],
                  [629, 225]),
    ((16, -1.0), True): ([1.478639, -0.4734214, -0.8639529, -0.0762829, 0.3389451, 0.9001259, 0.2607956, -0.7522487],
                         [0.8441275, -0.5197543, -1.1735177, -0.2045977, 0.4797761, 1.0479015, -0.1119495, -0.9519296],
                         [629, 837]),
}


@pytest.mark.parity
@pytest.mark.parametrize("r,prop_attn", list(TOME_ORACLE), ids=["r13", "r13_no_prop_attn", "r16_decreasing"])
def test_deit_small_with_tome_matches_the_official_patch(seeded_deit_small, r, prop_attn):
  model, variables, images, _ = seeded_deit_small
  check_oracle(model.clone(reduction=dict(kind="tome", r=r, prop_attn=prop_attn)), variables, images,
               *TOME_ORACLE[(r, prop_attn)])


def test_schedules_follow_the_official_parse_r():
  assert tome.parse_r(12, 13) == [13] * 12
  assert tome.parse_r(12, (13, 0.0)) == [13] * 12
  # (16, -1): from 2 r = 32 down to 0 in 11 equal steps of 32 / 11, truncated
  assert tome.parse_r(12, (16, -1.0)) == [32, 29, 26, 23, 20, 17, 14, 11, 8, 5, 2, 0]
  assert tome.parse_r(4, [5, 3]) == [5, 3, 0, 0]


def test_token_counts_per_block_and_gmacs_of_deit_small_r13():
  """197 tokens lose 13 per block: 184 ... 41 into the MLPs; ToMe reports 2.7 GFLOPs (MACs) for
  DeiT-S r = 13 (arXiv:2210.09461, table 5), against 4.6 without."""
  model = jaxvit.create_model("deit_small_patch16_224", reduction=dict(kind="tome", r=13))
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  _, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  counts = [out[f"block{i}"].shape[1] for i in range(12)]
  assert counts == list(range(184, 40, -13)) == tome.token_counts(197, [13] * 12, 1)
  assert round(count_macs(model, variables, images)["total"] / 1e9, 1) == 2.7


def test_r_is_capped_at_half_the_unprotected_tokens():
  assert tome.token_counts(17, [100, 100], 1) == [9, 5]
  x = jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3)
  assert tome.bipartite_soft_matching(x, 100, class_token=True)(x).shape == (2, 4, 3)


def small(**reduction):
  model = jaxvit.create_model("deit_tiny_distilled_patch16_224", img_size=64, depth=3,
                              reduction=dict(kind="tome", **reduction) if reduction else None)
  return model, jaxvit.init_variables(model.clone(reduction=None))


def test_r_zero_is_the_unreduced_model():
  model, variables = small(r=0)
  plain, _ = small()
  images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  np.testing.assert_allclose(model.apply(variables, images)[0], plain.apply(variables, images)[0], atol=1e-6)


def test_sources_partition_the_input_tokens_and_match_the_sizes():
  model, variables = small(r=3, trace_source=True)
  _, out = model.apply(variables, jax.random.normal(jax.random.key(0), (2, 64, 64, 3)))
  source, size = out["source2"], out["size2"]  # [B, N, 18], [B, N, 1] after the last block
  assert source.shape == (2, 18 - 9, 18)
  np.testing.assert_array_equal(source.sum(axis=1), 1.0)  # every input token is in exactly one group
  np.testing.assert_array_equal(source.sum(axis=2), size[..., 0])
  np.testing.assert_array_equal(source[:, 0, 0], 1.0)  # class and distillation tokens stay alone, in front
  np.testing.assert_array_equal(source[:, 1, 1], 1.0)
  np.testing.assert_array_equal(size[:, :2, 0], 1.0)


def test_tome_trains_under_jit_with_static_shapes():
  model, variables = small(r=2)
  params = dict(variables["params"])
  for head in ("head", "head_dist"):  # zero-initialised heads would stop every gradient below them
    params[head] = dict(params[head], kernel=jax.random.normal(jax.random.key(1), params[head]["kernel"].shape))
  images, labels = jax.random.normal(jax.random.key(0), (4, 64, 64, 3)), jnp.array([0, 1, 2, 3])
  grads, _ = train_grads(model, params, images, labels)
  assert float(jnp.abs(grads["encoder"]["blocks_2"]["mlp"]["fc1"]["kernel"]).sum()) > 0


@pytest.mark.parametrize("reduction,overrides,match", [
    (dict(kind="tokenlearner", r=1), {}, "reduction kind='tokenlearner'; accepted: \\('tome', 'evit', 'dynamicvit', 'ats', 'patch_merger'"),
    (dict(kind="tome"), {}, "needs \\['r'\\] .* \\(got no r\\)"),
    (dict(kind="tome", r=2, ratio=0.5), {}, "got \\['ratio'\\]"),
    (dict(kind="tome", r=2), dict(scan=True), "token reduction needs scan=False"),
])
def test_bad_reduction_names_the_field(reduction, overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_tiny_patch16_224", reduction=reduction, **overrides)
