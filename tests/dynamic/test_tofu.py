"""Token Fusion (`reduction=dict(kind="tofu")`): pruning and MLERP merging against a NumPy transcription of the paper's
algorithm on ToMe's matching, which blocks prune or merge, token counts and FLOPs of DeiT-S, r = 0 = the plain
model, training under jit, and bad configs. The authors released no code (see `jaxvit.dynamic.tofu`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.dynamic import reduction, tofu, tome
from dynamic_oracle import check_bfloat16, random_variables, train_grads


def numpy_tofu(metric, x, size, r, mode, class_token=True, distill_token=False):
  """ToMe's bipartite soft matching written out with loops (A = even tokens, B = odd; the r A tokens of highest
  cosine similarity to their best B match leave), then ToFu: "prune" drops them, "mlerp" merges each group G into
  (sum_G size x / sum_G size) / ||.|| * max_G ||x|| with summed sizes."""
  out_x, out_size = [], []
  for m, xb, sb in zip(metric, x, size):
    m = m / np.linalg.norm(m, axis=-1, keepdims=True)
    a, b = list(range(0, len(m), 2)), list(range(1, len(m), 2))
    scores = m[a] @ m[b].T
    if class_token:
      scores[0, :] = -np.inf
    if distill_token:
      scores[:, 0] = -np.inf
    best, match = scores.max(1), scores.argmax(1)
    order = np.argsort(-best, kind="stable")
    sources = set(order[:r].tolist())
    groups = {j: [b[j]] for j in range(len(b))}
    if mode == "mlerp":
      for i in sources:
        groups[match[i]].append(a[i])
    unmerged = [a[i] for i in sorted(set(range(len(a))) - sources)]
    tokens, sizes = [xb[t] for t in unmerged], [sb[t] for t in unmerged]
    for j in range(len(b)):
      g = groups[j]
      if len(g) == 1:
        tokens.append(xb[g[0]])
        sizes.append(sb[g[0]])
        continue
      average = (sb[g] * xb[g]).sum(0) / sb[g].sum()
      tokens.append(average / np.linalg.norm(average) * np.linalg.norm(xb[g], axis=-1).max())
      sizes.append(sb[g].sum(0))
    if distill_token:  # ToMe's order with a distillation token: unm[:1], dst[:1], unm[1:], dst[1:]
      n_unm = len(unmerged)
      tokens = tokens[:1] + tokens[n_unm:n_unm + 1] + tokens[1:n_unm] + tokens[n_unm + 1:]
      sizes = sizes[:1] + sizes[n_unm:n_unm + 1] + sizes[1:n_unm] + sizes[n_unm + 1:]
    out_x.append(np.stack(tokens))
    out_size.append(np.stack(sizes))
  return np.stack(out_x), np.stack(out_size)


@pytest.mark.parametrize("mode", tofu.MERGE_MODES)
@pytest.mark.parametrize("distill_token", [False, True])
def test_prune_and_mlerp_match_the_numpy_transcription(mode, distill_token):
  rng = np.random.RandomState(0)
  metric, x = rng.standard_normal((2, 17, 8)), rng.standard_normal((2, 17, 6)) * rng.uniform(0.5, 3, (2, 17, 1))
  size = rng.randint(1, 4, (2, 17, 1)).astype(np.float32)
  merge = tome.bipartite_soft_matching(jnp.asarray(metric, jnp.float32), 5, True, distill_token)
  got_x, got_size = tofu.fuse(merge, jnp.asarray(x, jnp.float32), jnp.asarray(size), mode, distill_token)
  want_x, want_size = numpy_tofu(metric, x, size, 5, mode, True, distill_token)
  assert got_x.shape == (2, 12, 6)
  np.testing.assert_allclose(got_x, want_x, atol=1e-5)
  np.testing.assert_array_equal(got_size, want_size)


def test_mlerp_keeps_the_largest_norm_where_an_average_shrinks():
  x = jnp.asarray([[[0.0, 9.0], [0.0, 3.0], [1.0, 0.0], [1.0, 0.2]]])  # class token; token 2 matches token 3
  merge = tome.bipartite_soft_matching(x, 1, class_token=True)
  fused, size = tofu.fuse(merge, x, jnp.ones((1, 4, 1)), "mlerp")
  average, _ = tome.merge_wavg(merge, x, jnp.ones((1, 4, 1)))
  merged = fused[0, -1]  # [unmerged A (the class token), B (token 1, token 3 + token 2)]
  np.testing.assert_allclose(jnp.linalg.norm(merged), jnp.linalg.norm(x[0, 3]), rtol=1e-6)  # the larger norm
  assert jnp.linalg.norm(average[0, -1]) < jnp.linalg.norm(merged) - 0.01
  np.testing.assert_allclose(merged / jnp.linalg.norm(merged), average[0, -1] / jnp.linalg.norm(average[0, -1]),
                             rtol=1e-6)
  np.testing.assert_array_equal(fused[0, :2], x[0, :2])  # the others as they were
  np.testing.assert_array_equal(size[0, :, 0], [1, 1, 2])
  pruned, size = tofu.fuse(merge, x, jnp.ones((1, 4, 1)), "prune")
  np.testing.assert_array_equal(pruned[0], x[0, jnp.array([0, 1, 3])])
  np.testing.assert_array_equal(size[0, :, 0], [1, 1, 1])


def test_deit_small_blocks_prune_then_merge_token_counts_and_gmacs():
  model = jaxvit.create_model("deit_small_patch16_224", reduction=dict(kind="tofu", r=13))
  modes = [b["merge_mode"] for b in reduction.encoder_reduction(model)["blocks"]]
  assert modes == ["prune"] * 7 + ["mlerp"] * 5  # OpenToMe's split: i > depth // 2 merges
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  _, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert [out[f"block{i}"].shape[1] for i in range(12)] == list(range(184, 40, -13))  # as ToMe r = 13
  assert round(count_macs(model, variables, images)["total"] / 1e9, 2) == 2.71  # ToMe's count: norms are not MACs


def _small(depth=3, **reduction):
  return jaxvit.create_model("deit_tiny_patch16_224", img_size=64, depth=depth, embed_dim=32, num_heads=2,
                             num_classes=4, reduction=dict(kind="tofu", **reduction) if reduction else None)


def test_r_zero_is_the_plain_model_and_prune_keeps_the_survivors_as_they_are():
  plain = _small()
  variables = random_variables(plain)
  images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  run = lambda m: jax.jit(lambda v, x: m.apply(v, x))(variables, images)  # noqa: E731
  np.testing.assert_array_equal(run(_small(r=0))[0], run(plain)[0])
  _, out = run(_small(r=[0, 3, 0], merge_from=3))  # block 1 prunes 3 of its 17 tokens after attention
  assert out["block1"].shape == (2, 14, 32) and out["size1"].shape == (2, 14, 1)
  np.testing.assert_array_equal(out["size1"], 1.0)  # pruned tokens leave no size behind
  _, merged = run(_small(r=[0, 3, 0], merge_from=0))
  assert float(merged["size1"].sum()) == 2 * 17 and float(merged["size1"].max()) > 1


def test_trains_under_jit():
  model = _small(depth=2, r=2, merge_from=1)  # block 0 prunes, block 1 merges
  params = random_variables(model)["params"]
  images, labels = jax.random.normal(jax.random.key(0), (4, 64, 64, 3)), jnp.array([0, 1, 2, 3])
  grads, _ = train_grads(model, params, images, labels)
  assert float(jnp.abs(grads["encoder"]["blocks_0"]["mlp"]["fc1"]["kernel"]).sum()) > 0


def test_bfloat16_runs_close_to_float32():
  model = _small(depth=2, r=3, merge_from=1)
  variables, images = random_variables(model), jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  check_bfloat16(model, variables, images)


@pytest.mark.parametrize("reduction,match", [
    (dict(kind="tofu"), "needs \\['r'\\] .* \\(got no r\\)"),
    (dict(kind="tofu", r=2, merge_from=13), "merge_from=13; accepted: a block 0..12"),
    (dict(kind="tofu", r=-1), "r=-1; accepted: an int >= 0"),
    (dict(kind="tofu", r=2, trace_source=True), "accepts \\['r', 'merge_from', 'prop_attn'\\]"),
])
def test_bad_configs_are_one_clear_error(reduction, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_small_patch16_224", reduction=reduction)
