"""TCFormer's clustering merge (`reduction=dict(kind="tcformer")`): DPC-kNN clusters and merged tokens against the
official `tcformer_utils.py` (from the local mirror of zengwang430521/TCFormer; skipped without it), the class token
passing, token counts and FLOPs of DeiT-S, M = N as singleton clusters, training under jit, the added parameters
and bad configs."""

import ast
import os
import subprocess
import types

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.dynamic import tcformer
from dynamic_oracle import check_bfloat16, random_variables, train_grads

OFFICIAL_REPO = "/work/.mirror/zengwang430521+TCFormer/repo"
CLUSTER = jax.jit(tcformer.cluster_dpc_knn, static_argnums=(1, 2))
MERGE = jax.jit(tcformer.merge_tokens, static_argnums=2)


@pytest.fixture(scope="module")
def official():
  """`index_points`, `cluster_dpc_knn` and `merge_tokens` from the official file (its module imports mmcv, so the
  three functions are compiled alone), with the density noise `torch.rand(...) * 1e-6` set to zero."""
  torch = pytest.importorskip("torch")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of zengwang430521/TCFormer")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:tcformer_module/tcformer_utils.py"],
                          capture_output=True, text=True, check=True).stdout
  wanted = {"index_points", "cluster_dpc_knn", "merge_tokens"}
  tree = ast.Module([n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name in wanted], [])
  no_noise = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
  no_noise.rand = lambda *shape, **kw: torch.zeros(*shape, **kw)
  namespace = {"torch": no_noise}
  exec(compile(tree, "tcformer_utils.py", "exec"), namespace)
  return torch, namespace


def official_merge(official, x, num_clusters, k, weight=None):
  torch, ns = official
  n = x.shape[1]
  token = {"x": torch.from_numpy(x), "idx_token": torch.arange(n)[None].repeat(x.shape[0], 1),
           "agg_weight": torch.ones(x.shape[0], n, 1), "map_size": [4, 4], "init_grid_size": [4, 4]}
  index, _ = ns["cluster_dpc_knn"](token, num_clusters, k)
  merged = ns["merge_tokens"](token, index, num_clusters, None if weight is None else torch.from_numpy(weight))
  return index.numpy(), merged["x"].numpy()


@pytest.mark.parametrize("n,num_clusters,k", [(16, 4, 5), (64, 16, 5), (49, 13, 3)])
def test_clusters_and_merged_tokens_match_official(official, n, num_clusters, k):
  rng = np.random.RandomState(n)
  x = (rng.standard_normal((2, n, 24)) * rng.uniform(0.3, 2.0, (2, n, 1))).astype(np.float32)
  weight = np.exp(rng.standard_normal((2, n, 1))).astype(np.float32)
  want_index, want = official_merge(official, x, num_clusters, k, weight)
  index = CLUSTER(jnp.asarray(x), num_clusters, k)
  np.testing.assert_array_equal(index, want_index)
  got = MERGE(jnp.asarray(x), index, num_clusters, jnp.asarray(weight))
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_cluster_merge_module_is_the_official_ctm_without_its_convolution(official):
  """LayerNorm (eps 1e-5), score Linear, exp weights, DPC-kNN (k = 5) and the weighted merge of `CTM.forward`; the
  class token passes."""
  torch, _ = official
  x = np.random.RandomState(1).standard_normal((2, 1 + 36, 16)).astype(np.float32)
  module = tcformer.ClusterMerge(tokens=9, k=5, prefix=1)
  variables = jax.tree.map(lambda a: a + 0.2, jax.jit(module.init)(jax.random.key(0), x))
  y, index = jax.jit(module.apply)(variables, x)
  p = jax.tree.map(lambda a: torch.from_numpy(np.array(a)), flax.core.meta.unbox(variables)["params"])
  normed = torch.nn.functional.layer_norm(torch.from_numpy(x[:, 1:]), (16,), p["norm"]["scale"], p["norm"]["bias"],
                                          1e-5)
  score = normed @ p["score"]["kernel"] + p["score"]["bias"]
  want_index, want = official_merge(official, normed.numpy(), 9, 5, score.exp().numpy())
  assert y.shape == (2, 10, 16) and index.shape == (2, 36)
  np.testing.assert_array_equal(y[:, 0], x[:, 0])
  np.testing.assert_array_equal(index, want_index)
  np.testing.assert_allclose(y[:, 1:], want, atol=1e-5)


def test_m_equal_to_n_keeps_every_normed_token_as_its_own_cluster():
  x = jnp.asarray(np.random.RandomState(2).standard_normal((2, 20, 8)), jnp.float32)
  index = CLUSTER(x, 20, 5)
  np.testing.assert_array_equal(np.sort(index, axis=1), np.broadcast_to(np.arange(20), (2, 20)))
  merged = MERGE(x, index, 20, jnp.ones((2, 20, 1)))
  np.testing.assert_allclose(jnp.take_along_axis(merged, index[..., None], axis=1), x / (1 + 1e-6), rtol=1e-6)
  twins = jnp.concatenate([x[:, :10], x[:, :10]], axis=1)  # equal densities: the index breaks the tie
  assert len(set(np.asarray(CLUSTER(twins, 10, 5))[0])) == 10


def test_deit_small_token_counts_gmacs_and_added_parameters():
  """Defaults: before block 6, 196 patches into ceil(196 / 4) = 49 clusters."""
  model = jaxvit.create_model("deit_small_patch16_224", reduction=dict(kind="tcformer"))
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  _, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert [out[f"block{i}"].shape[1] for i in range(12)] == [197] * 6 + [50] * 6
  assert out["cluster_index"].shape == (1, 196)
  assert round(count_macs(model, variables, images)["total"] / 1e9, 2) == 2.89
  flat = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  plain = flax.traverse_util.flatten_dict(jax.eval_shape(lambda: jaxvit.init_variables(
      jaxvit.create_model("deit_small_patch16_224")))["params"], sep="/")
  added = {k: v.shape for k, v in flat.items() if k not in plain}
  assert model.reduction_params == ("encoder/ctm",) and all(k.startswith("encoder/ctm") for k in added)
  assert added == {"encoder/ctm/norm/scale": (384,), "encoder/ctm/norm/bias": (384,),
                   "encoder/ctm/score/kernel": (384, 1), "encoder/ctm/score/bias": (1,)}


def test_trains_under_jit_and_the_score_learns_through_the_merge():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, embed_dim=32,
                              num_heads=2, num_classes=4, reduction=dict(kind="tcformer", location=1, tokens=8))
  params = random_variables(model)["params"]
  images, labels = jax.random.normal(jax.random.key(0), (4, 32, 32, 3)), jnp.array([0, 1, 2, 3])
  grads, out = train_grads(model, params, images, labels)
  assert out["block0"].shape == (4, 65, 32) and out["block1"].shape == (4, 9, 32)
  assert float(jnp.abs(grads["encoder"]["ctm"]["score"]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads["encoder"]["blocks_0"]["mlp"]["fc1"]["kernel"]).sum()) > 0


def test_bfloat16_runs_close_to_float32():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=64, depth=2, embed_dim=32, num_heads=2, num_classes=4,
                              reduction=dict(kind="tcformer", location=1, tokens=4))
  variables, images = random_variables(model), jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  check_bfloat16(model, variables, images)


@pytest.mark.parametrize("reduction,match", [
    (dict(kind="tcformer", location=12), "location=12; accepted: a block 0..11"),
    (dict(kind="tcformer", tokens=0), "tokens=0; accepted: an int in 1..196"),
    (dict(kind="tcformer", tokens=0.25), "tokens=0.25; accepted: an int in 1..196"),
    (dict(kind="tcformer", k=0), "k=0; accepted: an int in 1..196"),
    (dict(kind="tcformer", sample_ratio=0.25), "accepts \\['tokens', 'location', 'k'\\]"),
])
def test_bad_configs_are_one_clear_error(reduction, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_small_patch16_224", reduction=reduction)
