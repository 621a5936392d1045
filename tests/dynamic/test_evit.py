"""EViT / Top-K (`jaxvit.dynamic.evit`) on the ViT: the official model's logits and token counts,
FLOPs, equivalence when off, training under jit, and errors.

EVIT_ORACLE: `youweiliang/evit` `evit.py` (`EViT`, keep rate at blocks 3, 6, 9) loaded with the weights
of timm's `deit_small_patch16_224` seeded as in the parity tests, run once on their two images: the
first 8 logits per image and the argmax.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.dynamic import evit
from dynamic_oracle import check_oracle


EVIT_ORACLE = {  # (keep_rate, fuse_token): (first 8 logits of image 0, of image 1, argmax)
    (0.7, True): ([1.4047992, -0.359888, -0.7647651, -0.1398164, 0.0879215, 1.0117403, 0.2059498, -0.5825308],
                  [0.8932981, -0.4507884, -1.1406492, -0.3342672, 0.1904008, 1.1159341, -0.1231391, -0.5400791],
                  [629, 152]),
    (0.7, False): ([1.3944103, -0.355124, -0.7654494, -0.1531658, 0.0948079, 1.006748, 0.2054186, -0.578085],
                   [0.8867699, -0.4496619, -1.1391208, -0.3383276, 0.1931306, 1.1096737, -0.11962, -0.5305673],
                   [629, 225]),
    (0.5, True): ([1.4427556, -0.3765611, -0.8579425, -0.1162921, 0.0776625, 0.937948, 0.1519061, -0.6137382],
                  [0.8689709, -0.4090161, -1.1876941, -0.2807843, 0.1271645, 1.1264918, -0.1064709, -0.5917011],
                  [902, 225]),
}


@pytest.mark.parity
@pytest.mark.parametrize("keep_rate,fuse_token", list(EVIT_ORACLE), ids=["keep0.7_fuse", "keep0.7", "keep0.5_fuse"])
def test_deit_small_with_evit_matches_the_official_model(seeded_deit_small, keep_rate, fuse_token):
  model, variables, images, _ = seeded_deit_small
  check_oracle(model.clone(reduction=dict(kind="evit", keep_rate=keep_rate, fuse_token=fuse_token)), variables,
               images, *EVIT_ORACLE[(keep_rate, fuse_token)])


@pytest.mark.parametrize("fuse_token,counts,gmacs", [
    (False, [196] * 3 + [138] * 3 + [97] * 3 + [68] * 3, 3.0),  # the official model's left_tokens
    (True, [196] * 3 + [139] * 3 + [99] * 3 + [71] * 3, 3.04),
])
def test_token_counts_and_gmacs_of_deit_small_keep_0_7(fuse_token, counts, gmacs):
  """EViT reports 3.0 GFLOPs (MACs) for DeiT-S at keep rate 0.7 (arXiv:2202.07800, table 1)."""
  model = jaxvit.create_model("deit_small_patch16_224", reduction=dict(kind="evit", keep_rate=0.7,
                                                                        fuse_token=fuse_token))
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  _, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert [out[f"block{i}"].shape[1] - 1 for i in range(12)] == counts
  assert out["kept3"].shape == (1, 138)
  assert round(count_macs(model, variables, images)["total"] / 1e9, 2) == gmacs


def test_kept_tokens_are_the_most_attended_and_fused_by_attention():
  x = jnp.arange(1 + 5, dtype=jnp.float32)[None, :, None] * jnp.ones((1, 1, 2))  # token i holds i
  cls_attn = jnp.array([[0.1, 0.4, 0.05, 0.3, 0.15]])
  out, kept = evit.keep_attentive(x, cls_attn, 2, fuse_token=True)
  np.testing.assert_array_equal(kept, [[1, 3]])
  np.testing.assert_allclose(out[0, :, 0], [0.0, 2.0, 4.0, 0.1 * 1 + 0.05 * 3 + 0.15 * 5], rtol=1e-6)


def small(**reduction):
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=64, depth=4,
                              reduction=dict(kind="evit", **reduction) if reduction else None)
  return model, jaxvit.init_variables(model.clone(reduction=None))


def test_keep_rate_one_is_the_unreduced_model():
  model, variables = small(keep_rate=1.0, locations=(1, 2))
  plain, _ = small()
  images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  np.testing.assert_array_equal(model.apply(variables, images)[0], plain.apply(variables, images)[0])


def test_evit_trains_under_jit_with_static_shapes():
  model, variables = small(keep_rate=0.5, locations=(1, 2), fuse_token=True)
  params = dict(variables["params"], head=dict(variables["params"]["head"],
                                               kernel=jax.random.normal(jax.random.key(1), (192, 1000))))
  images, labels = jax.random.normal(jax.random.key(0), (4, 64, 64, 3)), jnp.array([0, 1, 2, 3])

  def loss(params):
    logits, out = model.apply({"params": params}, images, train=True)
    assert out["block3"].shape == (4, 1 + 5 + 1, 192)  # class + (16 -> 8 + 1 fused = 9 -> 5) + 1 fused
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(value) and float(jnp.abs(grads["encoder"]["blocks_0"]["attn"]["qkv"]["kernel"]).sum()) > 0


@pytest.mark.parametrize("reduction,overrides,match", [
    (dict(kind="evit", keep_rate=1.5), {}, "keep_rate=1.5; accepted: \\(0, 1\\]"),
    (dict(kind="evit", locations=(12,)), {}, "locations=\\(12,\\); accepted: blocks 0..11"),
    (dict(kind="evit", keep=0.7), {}, "accepts \\['keep_rate', 'locations', 'fuse_token'\\] \\(got \\['keep'\\]\\)"),
    (dict(kind="evit"), dict(class_token=False, global_pool="avg"), "exactly one prefix token, the class token \\(class_token=True"),
])
def test_bad_evit_config_names_the_field(reduction, overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_tiny_patch16_224", reduction=reduction, **overrides)


def test_keep_rate_warmup_follows_the_official_cosine_snapped_to_few_rates():
  from jaxvit.dynamic.evit import warmup_keep_rate, warmup_model
  rates = [warmup_keep_rate(step, 0.7, start=10, steps=100, levels=4) for step in range(130)]
  assert rates[:10] == [1.0] * 10 and rates[110:] == [0.7] * 20
  assert sorted(set(rates), reverse=True) == [1.0, 0.925, 0.85, 0.775, 0.7]  # 5 shapes, so 5 compiles
  assert all(a >= b for a, b in zip(rates, rates[1:]))
  official = 0.7 + 0.3 * (math.cos(37 / 100 * math.pi) + 1) * 0.5  # helpers.py adjust_keep_rate at step 47
  assert abs(rates[47] - official) <= 0.3 / 8
  model = jaxvit.create_model("deit_small_patch16_224", reduction=dict(kind="evit", keep_rate=0.7))
  assert warmup_model(model, dict(steps=100), 100)[0].reduction == dict(kind="evit", keep_rate=0.7)
  with pytest.raises(ValueError, match="keep_rate_warmup needs .*reduction of kind 'evit'"):
    warmup_model(jaxvit.create_model("deit_small_patch16_224"), dict(steps=100), 0)
  with pytest.raises(ValueError, match="keep_rate_warmup=.*accepted keys start, steps \\(required\\), levels"):
    warmup_model(model, dict(start=3), 0)
