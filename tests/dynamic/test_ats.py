"""ATS (`jaxvit.dynamic.ats`) on the ViT: the official `ats_block.py` run in torch on the same inputs, padding
that never reaches kept tokens, a manual gather, static shapes under jit, off-the-shelf weights and errors.

The official code comes from `/work/.mirror/adaptivetokensampling+ATS/repo` (skipped when absent).
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvit.dynamic import ats
from jaxvit.models.vit import Block, VisionTransformer

MIRROR = "/work/.mirror/adaptivetokensampling+ATS/repo"
DIM, HEADS = 32, 2
SMALL = dict(num_classes=10, img_size=32, patch_size=8, embed_dim=DIM, depth=3, num_heads=HEADS)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  """The official `ats_block` module (with its `transformer_block`), imported from the mirror."""
  if not os.path.isdir(MIRROR):
    pytest.skip("needs the adaptivetokensampling/ATS mirror")
  pytest.importorskip("torch")
  pytest.importorskip("timm")
  root = tmp_path_factory.mktemp("ats_official")
  pkg = root / "ats_official"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  for name in ("ats_block.py", "transformer_block.py"):
    text = subprocess.run(["git", "--git-dir", MIRROR, "show", f"HEAD:libs/models/transformers/{name}"],
                          check=True, capture_output=True, text=True).stdout
    (pkg / name).write_text(text)
  sys.path.insert(0, str(root))
  try:
    import ats_official.ats_block as module
  finally:
    sys.path.remove(str(root))
  return module


def _block(k, samples, x, seed=0):
  block = Block(num_heads=HEADS, ats_tokens=k, ats_samples=samples)
  return block, jax.jit(block.init, static_argnums=2)(jax.random.PRNGKey(seed), x, 0.0)


def _load_official(official, params):
  """The official ATSBlock with a jaxvit Block's weights (timm layout)."""
  import torch
  p = jax.tree_util.tree_map(lambda a: torch.tensor(np.asarray(a)), jax.device_get(params))
  blk = official.ATSBlock(DIM, HEADS, qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
  state = {"norm1.weight": p["norm1"]["scale"], "norm1.bias": p["norm1"]["bias"],
           "norm2.weight": p["norm2"]["scale"], "norm2.bias": p["norm2"]["bias"],
           "attn.qkv.weight": p["attn"]["qkv"]["kernel"].reshape(DIM, 3 * DIM).T,
           "attn.qkv.bias": p["attn"]["qkv"]["bias"].reshape(-1),
           "attn.proj.weight": p["attn"]["proj"]["kernel"].reshape(DIM, DIM).T, "attn.proj.bias": p["attn"]["proj"]["bias"],
           "mlp.fc1.weight": p["mlp"]["fc1"]["kernel"].T, "mlp.fc1.bias": p["mlp"]["fc1"]["bias"],
           "mlp.fc2.weight": p["mlp"]["fc2"]["kernel"].T, "mlp.fc2.bias": p["mlp"]["fc2"]["bias"]}
  state["attn.out_zero_mask"] = blk.state_dict()["attn.out_zero_mask"]
  blk.load_state_dict({k: v.contiguous() for k, v in state.items()})
  return blk.eval()


def _unbox(variables):
  import flax
  return flax.core.meta.unbox(variables)["params"]


@pytest.mark.parity
def test_two_ats_blocks_match_the_official_blocks(official):
  """17 tokens -> K = 9 (n_ref = K, the only way the official code runs with K < N) -> K = 9 = N (n_ref = 17,
  the official call): scores, sampled tokens, policies and outputs, the second block on padded input."""
  import torch
  x = np.random.RandomState(0).standard_normal((2, 17, DIM)).astype(np.float32)
  plan = ats.plan(17, 2, 9, (0, 1))
  assert plan == [(9, 8), (9, 16)]
  blocks = [_block(k, s, jnp.asarray(x), seed) for seed, (k, s) in enumerate(plan)]
  refs = [_load_official(official, _unbox(v)) for _, v in blocks]

  y, policy = jnp.asarray(x), None
  ty, tpolicy = torch.tensor(x), torch.ones(2, 17, 1)
  for (block, variables), ref, n_ref in zip(blocks, refs, (9, 17)):
    (y, aux) = jax.jit(functools.partial(block.apply, drop_path_rate=0.0))(variables, y, policy=policy)
    y = y * aux["policy"][..., None]
    policy = aux["policy"]
    with torch.no_grad():
      ty, tpolicy = ref(ty, 9, tpolicy, torch.nonzero(tpolicy), n_ref_tokens=n_ref)
    np.testing.assert_array_equal(np.asarray(policy), tpolicy[..., 0].numpy())
    np.testing.assert_allclose(np.asarray(y), ty.numpy(), atol=2e-5, rtol=1e-5)
  assert 0 < float(policy.sum()) < policy.size  # the second block's input had padding and it sampled duplicates


@pytest.mark.parity
def test_scores_and_samples_match_the_official_functions(official):
  import torch
  rs = np.random.RandomState(1)
  attn = jax.nn.softmax(jnp.asarray(rs.standard_normal((2, HEADS, 17, 17)), jnp.float32), axis=-1)
  v = jnp.asarray(rs.standard_normal((2, HEADS, 17, DIM // HEADS)), jnp.float32)
  scores, order = ats.score_assignment(attn, v)
  sampler = official.AdaptiveTokenSampler(DIM, HEADS)
  t_scores, t_order = sampler.score_assignment_step(torch.tensor(np.asarray(attn)), torch.tensor(np.asarray(v)))
  np.testing.assert_allclose(np.asarray(scores), t_scores.numpy(), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(order), t_order.numpy())
  raw = torch.tensor(rs.standard_normal((2, 17, DIM)).astype(np.float32))
  for k, n_ref in ((17, 17), (9, 9), (12, 12)):
    picked = ats.sample_tokens(scores, ats.sample_count(k, 17, n_ref), k)
    _, t_attn, t_policy, _ = sampler.inverse_transform_sampling(t_scores, t_order, torch.tensor(np.asarray(attn)),
                                                                k, raw, n_ref)
    rows, _, policy = ats.gather_sampled(attn, jnp.asarray(raw.numpy()), order, picked)
    np.testing.assert_array_equal(np.asarray(policy), t_policy[..., 0].numpy())
    np.testing.assert_allclose(np.asarray(rows), t_attn.numpy(), atol=1e-7)


def test_kept_rows_are_the_plain_blocks_rows_at_the_sampled_tokens():
  """Manual gather: with the same weights, kept output row r is the plain block's output at token sampled[r]."""
  x = jnp.asarray(np.random.RandomState(2).standard_normal((2, 17, DIM)), jnp.float32)
  block, variables = _block(9, 8, x)
  y, aux = jax.jit(block.apply, static_argnums=2)(variables, x, 0.0)
  plain, _ = jax.jit(Block(num_heads=HEADS).apply, static_argnums=2)(variables, x, 0.0)
  sampled = np.asarray(aux["sampled"])
  for b in range(2):
    np.testing.assert_allclose(np.asarray(y[b, 0]), np.asarray(plain[b, 0]), atol=1e-5)
    for r, t in enumerate(sampled[b]):
      if t >= 0:
        np.testing.assert_allclose(np.asarray(y[b, r + 1]), np.asarray(plain[b, t]), atol=1e-5)
  assert np.array_equal(np.asarray(aux["policy"][:, 1:]), (sampled >= 0).astype(np.float32))
  assert len(set(sampled[0][sampled[0] >= 0])) == int((sampled[0] >= 0).sum())  # no token sampled twice


def test_padded_tokens_never_influence_kept_ones():
  rs = np.random.RandomState(3)
  x = jnp.asarray(rs.standard_normal((1, 9, DIM)), jnp.float32)
  policy = jnp.asarray([[1, 1, 1, 0, 1, 0, 1, 1, 0]], jnp.float32)
  moved = x + jnp.asarray(rs.standard_normal(x.shape) * 10, jnp.float32) * (1 - policy[..., None])
  kept = np.asarray(policy[0]) > 0
  for k, s in ((9, 16), (0, 0)):  # an ATS block and a later plain block
    block, variables = _block(k, s, x)
    apply = jax.jit(functools.partial(block.apply, drop_path_rate=0.0))
    (a, aux_a), (b, aux_b) = (apply(variables, t, policy=policy) for t in (x, moved))
    if k:
      np.testing.assert_array_equal(np.asarray(aux_a["policy"]), np.asarray(aux_b["policy"]))
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
      assert not set(np.asarray(aux_a["sampled"][0]).tolist()) & {3, 5, 8}
    else:
      np.testing.assert_allclose(np.asarray(a)[:, kept], np.asarray(b)[:, kept], atol=1e-5)


def test_ats_at_the_last_block_keeps_the_class_token_logits():
  model = VisionTransformer(**SMALL)
  images = jnp.asarray(np.random.RandomState(4).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
  variables = jax.tree_util.tree_map(lambda a: a + 0.05, variables)  # a non-zero head
  plain, _ = model.apply(variables, images)
  logits, out = model.clone(reduction=dict(kind="ats", n_tokens=9, locations=(2,))).apply(variables, images)
  assert out["block2"].shape == (2, 9, DIM) and float(jnp.abs(plain).max()) > 0.1
  np.testing.assert_allclose(np.asarray(logits), np.asarray(plain), atol=1e-4)


def test_ats_off_the_shelf_has_the_plain_deits_parameters():
  """The official DeiT-S setting (blocks 3..11, K = 197) on a DeiT's 12 blocks: no parameter added or renamed."""
  deit = VisionTransformer(**{**SMALL, "depth": 12})
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  shapes = lambda m: jax.tree_util.tree_map(lambda a: a.shape, jax.eval_shape(m.init, jax.random.PRNGKey(0), images))
  with_ats = deit.clone(reduction=dict(kind="ats"))
  assert shapes(with_ats) == shapes(deit) and with_ats.reduction_params == ()
  deit_s = VisionTransformer(embed_dim=384, num_heads=6, reduction=dict(kind="ats"))
  assert [b["ats_tokens"] for b in deit_s._reduction_config()["blocks"]] == [0, 0, 0] + [197] * 9
  assert [b["ats_samples"] for b in deit_s._reduction_config()["blocks"]] == [0, 0, 0] + [196] * 9


def test_ats_trains_under_jit_with_static_shapes():
  model = VisionTransformer(**{**SMALL, "depth": 2}, reduction=dict(kind="ats", n_tokens=0.6, locations=(0, 1)))
  x = jnp.asarray(np.random.RandomState(5).standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = jax.tree_util.tree_map(lambda a: a + 0.05, jax.jit(model.init)(jax.random.PRNGKey(0), x))
  loss = jax.jit(jax.value_and_grad(lambda v, img: model.apply(v, img, train=True)[0].sum()))
  value, grads = loss(variables, x)
  assert np.isfinite(float(value)) and all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
  assert float(jnp.abs(grads["params"]["encoder"]["blocks_0"]["attn"]["qkv"]["kernel"].value).sum()) > 0
  _, out = jax.jit(model.apply)(variables, x * 3)  # other data, same compiled shapes
  assert out["block0"].shape == (2, 10, DIM) and out["block1"].shape == (2, 8, DIM)  # 0.6 * 17 -> 10, then 8


@pytest.mark.parametrize("reduction,overrides,match", [
    (dict(kind="ats", n_tokens=0, locations=(1, 2)), {}, "n_tokens"),
    (dict(kind="ats", n_tokens=(9, 9, 9), locations=(1, 2)), {}, "n_tokens"),
    (dict(kind="ats", locations=(2, 1)), {}, "locations"),
    (dict(kind="ats", locations=(3,)), {}, "locations"),
    (dict(kind="ats", keep_rate=0.5), {}, "accepts"),
    (dict(kind="ats", locations=(1,)), dict(global_pool="avg"), "global_pool"),
    (dict(kind="ats", locations=(1,)), dict(class_token=False, global_pool="avg"), "class token"),
])
def test_bad_ats_config_names_the_field(reduction, overrides, match):
  with pytest.raises(ValueError, match=match):
    VisionTransformer(**SMALL, **overrides, reduction=reduction).validate()
