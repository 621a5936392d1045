"""LGViT's exit heads (`jaxvit.dynamic.exit_heads`): parameter counts against the official layer lists, a naive
numpy reference of the official computation, other grids, prefix tokens, bfloat16, gradients, the placement."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jaxvit.dynamic import exit_heads
from jaxvit.dynamic.exit_heads import LGVIT_BLOCKS, LGVIT_KINDS, GlobalAggregationHead, LocalPerceptionHead, exit_head

KINDS = ("local", "local_1x1", "global_r2", "global_r3")


def _init(head, tokens, grid, prefix):
  return nn.meta.unbox(head.init(jax.random.key(0), tokens, grid=grid, num_prefix_tokens=prefix))


def _randomised(variables, seed=1):
  """Every parameter and running statistic moved off its init (variances kept positive)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  out = []
  for (path, leaf), key in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    noise = jax.random.normal(key, leaf.shape, jnp.float32)
    if name.endswith("['var']"):
      out.append(0.5 + jnp.abs(noise))
    elif name.endswith("['scale']"):
      out.append(1.0 + 0.2 * noise)
    else:
      out.append(0.1 * noise)
  return jax.tree_util.tree_unflatten(tree, out)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("dist", [False, True])
def test_parameter_counts_follow_the_official_layer_lists(dist):
  # C = 384 (DeiT-S), K = 1000; the official layers (highway.py), DeiTHighway_v2's classifier(s) counted last:
  #   conv1_1: Conv2d(C, C, 1) C^2 + C, BN 2C, Conv2d(C, C, 3, groups=C) 9C + C, BN 2C, Conv2d(C, C, 1) C^2 + C,
  #            BN 2C                                                       = 2 C^2 + 18 C (+ 6C running stats)
  #   conv2_1: Conv2d(C, C, 1) C^2 + C, BN 2C, Conv2d(C, C, 1) C^2 + C, BN 2C = 2 C^2 + 6 C (+ 4C running stats)
  #   GlobalSparseAttn: qkv Linear(C, 3C, bias=False) 3 C^2, proj Linear(C, C) C^2 + C = 4 C^2 + C
  #   classifier: Linear(C, K) CK + K; backbone='DeiT' adds distillation_classifier, another CK + K.
  c, k = 384, 1000
  classifier = (c * k + k) * (2 if dist else 1)
  expected = {"local": (2 * c * c + 18 * c, 6 * c), "local_1x1": (2 * c * c + 6 * c, 4 * c),
              "global_r2": (4 * c * c + c, 0), "global_r3": (4 * c * c + c, 0)}
  prefix = 2 if dist else 1
  tokens = jax.ShapeDtypeStruct((1, prefix + 14 * 14, c), jnp.float32)
  counts = {}
  for kind in KINDS:
    head = exit_head(kind, k, dist_token=dist)
    shapes = jax.eval_shape(lambda x: _init(head, x, (14, 14), prefix), tokens)
    counts[kind] = _count(shapes["params"])
    assert counts[kind] == expected[kind][0] + classifier
    assert _count(shapes.get("batch_stats", {})) == expected[kind][1]
  if not dist:  # DeiT-S / 1000 classes: one head of each kind, and the official 8-exit placement in total
    assert (counts["local"], counts["local_1x1"], counts["global_r2"]) == (686_824, 682_216, 975_208)
    assert sum(counts[kind] for kind in LGVIT_KINDS[8]) == 6_638_912


# ---- a naive numpy reference of the official computation (highway.py + DeiTHighway_v2.forward) ----

def _gelu(x):
  return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _bn(x, p, s, train):  # x [B, H, W, C] (channels last), torch BatchNorm2d
  mean, var = (x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))) if train else (s["mean"], s["var"])
  return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _conv1x1(x, p):
  return np.einsum("bhwc,cd->bhwd", x, p["kernel"]) + p["bias"]


def _dwconv3x3(x, p):  # torch Conv2d(C, C, 3, 1, 1, groups=C), kernel [3, 3, 1, C]
  b, h, w, c = x.shape
  padded = np.zeros((b, h + 2, w + 2, c), x.dtype)
  padded[:, 1:-1, 1:-1] = x
  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      out[:, i, j] = np.einsum("bijc,ijc->bc", padded[:, i:i + 3, j:j + 3], p["kernel"][:, :, 0])
  return out + p["bias"]


def _local_reference(tokens, grid, prefix, p, s, depthwise, train):
  b, _, c = tokens.shape
  x = tokens[:, prefix:].reshape(b, *grid, c)
  y = _bn(_gelu(_conv1x1(x, p["conv1"])), p["bn1"], s.get("bn1"), train)
  if depthwise:
    y = _bn(_gelu(_dwconv3x3(y, p["proj"])), p["proj_bn"], s.get("proj_bn"), train)
  y = _bn(_conv1x1(y, p["conv2"]), p["bn2"], s.get("bn2"), train)
  return (y + x).reshape(b, -1, c)


def _global_reference(tokens, grid, prefix, p, sr_ratio, num_heads):
  b, _, c = tokens.shape
  x = tokens[:, prefix:].reshape(b, *grid, c)
  x = np.stack([x[:, i, j] for i in range(0, grid[0], sr_ratio) for j in range(0, grid[1], sr_ratio)], axis=1)
  qkv = np.einsum("bnc,cthd->tbhnd", x, p["attn"]["qkv"]["kernel"])  # no qkv bias
  q, k, v = qkv
  logits = np.einsum("bhqd,bhkd->bhqk", q, k) * (c // num_heads) ** -0.5
  attn = np.exp(logits - logits.max(-1, keepdims=True))
  attn /= attn.sum(-1, keepdims=True)
  y = np.einsum("bhqk,bhkd->bhqd", attn, v)
  return np.einsum("bhnd,hdc->bnc", y, p["attn"]["proj"]["kernel"]) + p["attn"]["proj"]["bias"]


def _classify_reference(features, tokens, p, dist):
  pooled = features.mean(axis=1)
  logits = (pooled + tokens[:, 0]) @ p["head"]["kernel"] + p["head"]["bias"]
  if dist:
    logits = (logits + (pooled + tokens[:, 1]) @ p["head_dist"]["kernel"] + p["head_dist"]["bias"]) / 2
  return logits


@pytest.mark.parametrize("kind,train,dist", [(kind, train, False) for kind in KINDS + ("global_r1",)
                                             for train in (False, True)] + [("local", True, True),
                                                                            ("global_r3", False, True)])
def test_matches_a_naive_reference(kind, train, dist):
  grid, c, prefix = (5, 6), 32, 2 if dist else 1
  head = exit_head(kind, 7, dist_token=dist)
  tokens = np.random.RandomState(0).standard_normal((3, prefix + 30, c)).astype(np.float32)
  variables = _randomised(_init(head, tokens, grid, prefix))
  logits, state = head.apply(variables, tokens, grid=grid, num_prefix_tokens=prefix, train=train,
                             mutable=["batch_stats", "intermediates"])
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  s = jax.tree.map(lambda a: np.asarray(a, np.float64), variables.get("batch_stats", {}))
  x = tokens.astype(np.float64)
  if kind.startswith("local"):
    features = _local_reference(x, grid, prefix, p, s, kind == "local", train)
  else:
    features = _global_reference(x, grid, prefix, p, int(kind[len("global_r"):]), 8)
  np.testing.assert_allclose(state["intermediates"]["features"][0], features, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits, _classify_reference(features, x, p, dist), rtol=1e-4, atol=1e-4)
  if train and kind.startswith("local"):  # running averages move 10% towards the batch statistics (momentum 0.1)
    batch_mean = _gelu(_conv1x1(x[:, prefix:].reshape(3, *grid, c), p["conv1"])).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(state["batch_stats"]["bn1"]["mean"], 0.9 * s["bn1"]["mean"] + 0.1 * batch_mean,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grid,sr,kept", [((14, 14), 2, 49), ((14, 14), 3, 25), ((7, 7), 3, 9), ((4, 9), 2, 10)])
def test_global_head_attends_to_every_sr_th_row_and_column(grid, sr, kept):
  head = GlobalAggregationHead(5, sr_ratio=sr)
  tokens = jnp.ones((2, 1 + grid[0] * grid[1], 16))
  variables = _init(head, tokens, grid, 1)
  logits, state = head.apply(variables, tokens, grid=grid, num_prefix_tokens=1, mutable=["intermediates"])
  assert logits.shape == (2, 5) and state["intermediates"]["features"][0].shape == (2, kept, 16)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid", [(1, 1), (3, 5)])
def test_other_grids_and_prefix_tokens(kind, grid):
  # four prefix tokens (class, distillation, two registers): the heads read tokens 0 and 1 and the grid after them
  head = exit_head(kind, 10, dist_token=True)
  tokens = jax.random.normal(jax.random.key(2), (2, 4 + grid[0] * grid[1], 24))
  variables = _init(head, tokens, grid, 4)
  logits = head.apply(variables, tokens, grid=grid, num_prefix_tokens=4)
  assert logits.shape == (2, 10) and bool(jnp.isfinite(logits).all())
  registers_changed = tokens.at[:, 2:4].add(1.0)  # registers are neither class tokens nor patches
  np.testing.assert_array_equal(head.apply(variables, registers_changed, grid=grid, num_prefix_tokens=4), logits)


def test_no_class_token_classifies_the_pooled_features():
  head = LocalPerceptionHead(4, class_token=False)
  tokens = jax.random.normal(jax.random.key(0), (2, 9, 8))
  variables = _init(head, tokens, (3, 3), 0)
  logits, state = head.apply(variables, tokens, grid=(3, 3), num_prefix_tokens=0, mutable=["intermediates"])
  pooled = state["intermediates"]["features"][0].mean(axis=1)
  p = variables["params"]["head"]
  np.testing.assert_allclose(logits, pooled @ p["kernel"] + p["bias"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["local", "global_r3"])
def test_bfloat16_is_close_to_float32(kind):
  tokens = jax.random.normal(jax.random.key(3), (4, 1 + 36, 64))
  f32 = exit_head(kind, 10)
  variables = _randomised(_init(f32, tokens, (6, 6), 1))
  reference = f32.apply(variables, tokens, grid=(6, 6), num_prefix_tokens=1)
  bf16 = exit_head(kind, 10, dtype=jnp.bfloat16)
  logits = bf16.apply(variables, tokens.astype(jnp.bfloat16), grid=(6, 6), num_prefix_tokens=1)
  assert logits.dtype == jnp.bfloat16
  scale = float(jnp.abs(reference).max())
  np.testing.assert_allclose(np.asarray(logits, np.float32), reference, atol=0.05 * scale)
  params_bf16 = exit_head(kind, 10, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  shapes = jax.eval_shape(lambda x: _init(params_bf16, x, (6, 6), 1), tokens)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes["params"])} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("kind", ["local", "global_r2"])
def test_gradients_reach_every_parameter_and_the_tokens(kind):
  head = exit_head(kind, 6, dist_token=True)
  tokens = jax.random.normal(jax.random.key(4), (4, 2 + 16, 16))
  variables = _randomised(_init(head, tokens, (4, 4), 2))
  labels = jnp.arange(4) % 6

  @jax.jit
  def loss(params, x):
    logits, _ = head.apply({**variables, "params": params}, x, grid=(4, 4), num_prefix_tokens=2, train=True,
                           mutable=["batch_stats"])
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1).mean()
  grads, token_grads = jax.grad(loss, argnums=(0, 1))(variables["params"], tokens)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert bool(jnp.isfinite(g).all()) and float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)
  assert float(jnp.abs(token_grads[:, 2:]).max()) > 0 and float(jnp.abs(token_grads[:, :2]).max()) > 0


def test_params_carry_logical_axis_names():
  tokens = jnp.zeros((1, 1 + 4, 8))
  local = LocalPerceptionHead(3).init(jax.random.key(0), tokens, grid=(2, 2), num_prefix_tokens=1)["params"]
  assert local["conv1"]["kernel"].names == ("embed", "mlp") and local["conv2"]["kernel"].names == ("mlp", "embed")
  assert local["bn1"]["scale"].names == ("mlp",) and local["head"]["kernel"].names == ("embed", "classes")
  glob = GlobalAggregationHead(3).init(jax.random.key(0), tokens, grid=(2, 2), num_prefix_tokens=1)["params"]
  assert glob["attn"]["qkv"]["kernel"].names == ("embed", None, "heads", "kv") and "bias" not in glob["attn"]["qkv"]


def test_official_placement_puts_local_heads_before_global_ones():
  assert LGVIT_BLOCKS == tuple(range(3, 11)) and len(LGVIT_KINDS[8]) == len(LGVIT_BLOCKS)
  for n, kinds in LGVIT_KINDS.items():
    assert len(kinds) == n and kinds[0] == "local" and kinds[-1].startswith("global")
    is_global = [k.startswith("global") for k in kinds]
    assert is_global == sorted(is_global)  # shallow exits local, deep exits global
  assert LGVIT_KINDS[6] == ("local", "local_1x1") + ("global_r2",) * 2 + ("global_r3",) * 2  # init_highway, n = 6


def test_bad_inputs_name_what_is_accepted():
  head = LocalPerceptionHead(3)
  with pytest.raises(ValueError, match="not \\[B, num_prefix_tokens \\+ h \\* w, C\\]"):
    _init(head, jnp.zeros((1, 1 + 10, 8)), (3, 3), 1)
  with pytest.raises(ValueError, match="num_prefix_tokens=1"):
    _init(LocalPerceptionHead(3, dist_token=True), jnp.zeros((1, 1 + 9, 8)), (3, 3), 1)
  with pytest.raises(ValueError, match="kind='conv1_1'; accepted"):
    exit_head("conv1_1", 3)
  with pytest.raises(ValueError, match="kind='global_r0'; accepted"):
    exit_head("global_r0", 3)
  assert isinstance(exit_heads.exit_head("global_r4", 3), GlobalAggregationHead)
