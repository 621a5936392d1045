"""PatchMerger (`jaxvit.dynamic.patch_merger`) on a class-token-free ViT: shapes, convex merging, gradients to the
queries, fewer MACs, init_from a plain ViT, and errors."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvit.bench.flops import count_macs
from jaxvit.dynamic.patch_merger import PatchMerger
from jaxvit.models.vit import VisionTransformer

DIM = 32
SMALL = dict(num_classes=10, img_size=32, patch_size=4, embed_dim=DIM, depth=2, num_heads=2, class_token=False,
             global_pool="avg")  # 64 patches


def _images(seed=0):
  return jnp.asarray(np.random.RandomState(seed).standard_normal((2, 32, 32, 3)), jnp.float32)


def test_merged_tokens_are_a_scaled_softmax_convex_combination_of_the_normed_tokens():
  x = jnp.asarray(np.random.RandomState(1).standard_normal((2, 64, DIM)) * 3 + 1, jnp.float32)
  merger = PatchMerger(5)
  variables = jax.jit(merger.init)(jax.random.PRNGKey(0), x)
  y = merger.apply(variables, x)
  assert y.shape == (2, 5, DIM)
  p = variables["params"]
  normed = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-6)
  normed = normed * p["norm"]["scale"].value + p["norm"]["bias"].value
  weights = jax.nn.softmax(jnp.einsum("md,bnd->bmn", p["queries"].value, normed) / np.sqrt(DIM), axis=-1)
  np.testing.assert_allclose(np.asarray(y), np.asarray(weights @ normed), atol=1e-5)
  lo, hi = normed.min(axis=1, keepdims=True), normed.max(axis=1, keepdims=True)  # inside the tokens' hull box
  assert bool(jnp.all((y >= lo - 1e-5) & (y <= hi + 1e-5)))
  same = jnp.broadcast_to(x[:, :1], x.shape)  # identical tokens merge to that token
  np.testing.assert_allclose(np.asarray(merger.apply(variables, same)),
                             np.asarray(jnp.broadcast_to(normed[:, :1], (2, 5, DIM))), atol=1e-5)


def test_vit_with_patch_merger_shapes_gradients_and_macs():
  model = VisionTransformer(**SMALL, reduction=dict(kind="patch_merger"))  # middle (before block 1), M = 8
  plain = VisionTransformer(**SMALL)
  images = _images()
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
  variables = jax.tree_util.tree_map(lambda a: a + 0.01, variables)  # a non-zero head
  logits, out = model.apply(variables, images)
  assert logits.shape == (2, 10) and out["block0"].shape == (2, 64, DIM) and out["block1"].shape == (2, 8, DIM)
  grads = jax.jit(jax.grad(lambda v: jnp.square(model.apply(v, images, train=True)[0]).sum()))(variables)
  queries = grads["params"]["encoder"]["patch_merger"]["queries"].value
  assert queries.shape == (8, DIM) and float(jnp.abs(queries).min()) > 0
  macs = count_macs(model, variables, images)["total"]
  plain_macs = count_macs(plain, jax.jit(plain.init)(jax.random.PRNGKey(0), images), images)["total"]
  assert macs < 0.6 * plain_macs  # one of two blocks on 8 tokens instead of 64


def test_merger_params_are_the_only_ones_a_plain_vit_lacks():
  model = VisionTransformer(**SMALL, reduction=dict(kind="patch_merger", tokens=4, location=0))
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  flat = lambda m: {"/".join(k): v.shape for k, v in flax.traverse_util.flatten_dict(flax.core.meta.unbox(
      jax.eval_shape(m.init, jax.random.PRNGKey(0), images)["params"])).items()}
  added = {k: v for k, v in flat(model).items() if k not in flat(VisionTransformer(**SMALL))}
  assert model.reduction_params == ("encoder/patch_merger",)
  assert added and all(k.startswith(model.reduction_params) for k in added)
  assert added["encoder/patch_merger/queries"] == (4, DIM)


@pytest.mark.parametrize("reduction,overrides,match", [
    (dict(kind="patch_merger"), dict(class_token=True, global_pool="token"), "class_token=False"),
    (dict(kind="patch_merger", location=2), {}, "location"),
    (dict(kind="patch_merger", tokens=0), {}, "tokens"),
    (dict(kind="patch_merger", tokens=65), {}, "tokens"),
    (dict(kind="patch_merger", r=2), {}, "accepts"),
])
def test_bad_patch_merger_config_names_the_field(reduction, overrides, match):
  with pytest.raises(ValueError, match=match):
    VisionTransformer(**{**SMALL, **overrides}, reduction=reduction).validate()
