"""LGViT's second training stage (`jaxvit.dynamic.lgvit_distill`): the feature terms against the official
`cal_hete_loss`, `cal_homo_loss` and `DownSampling` (extracted from the local mirror of falcon-xu/LGViT, skipped
without it), the whole stage-2 loss of a multi-exit ViT against a transcription of the official
`train_strategy='distillation_LGViT'` branch, gradients, the frozen backbone, and config errors."""

import ast
import os
import subprocess
import types

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from fast_jit import jit_fast

from jaxvit.dynamic import lgvit_distill
from jaxvit.dynamic.exit_heads import LGVIT_KINDS
from jaxvit.models.vit import VisionTransformer
from jaxvit.train import optim, trainer

MIRROR = "/work/.mirror/falcon-xu+LGViT/repo"
OFFICIAL_FILE = "models/deit_highway/modeling_highway_deit.py"
OFFICIAL_NAMES = ("DownSampling", "cal_homo_loss", "cal_hete_loss")
# The official 8 exits on a tiny distilled DeiT: blocks 0..7 of 9, a 6 x 6 patch grid, class + distillation tokens
TINY = dict(num_classes=5, img_size=24, patch_size=4, embed_dim=16, depth=9, num_heads=2, dist_token=True,
            exits=dict(blocks=tuple(range(8)), head="lgvit"))


@pytest.fixture(scope="module")
def official():
  """A namespace with the official `DownSampling`, `cal_homo_loss`, `cal_hete_loss` (their source from the
  mirror; the file itself imports transformers and its sibling modules, so only these definitions are run)."""
  if not os.path.isdir(MIRROR):
    pytest.skip("needs the falcon-xu/LGViT mirror")
  torch = pytest.importorskip("torch")
  source = subprocess.run(["git", "--git-dir", MIRROR, "show", f"HEAD:{OFFICIAL_FILE}"], check=True,
                          capture_output=True, text=True).stdout
  nodes = [n for n in ast.parse(source).body if getattr(n, "name", None) in OFFICIAL_NAMES]
  assert sorted(n.name for n in nodes) == sorted(OFFICIAL_NAMES)
  namespace = dict(torch=torch, nn=torch.nn, F=torch.nn.functional)
  exec(compile(ast.Module(body=nodes, type_ignores=[]), OFFICIAL_FILE, "exec"), namespace)
  return types.SimpleNamespace(**{name: namespace[name] for name in OFFICIAL_NAMES})


def _official_feature_terms(official, features, hidden_last):
  """The official heterogeneous and homogeneous sums, 8 exits (0-3 local, 4-7 global), `[:, 2:, :]` — the lines of
  `DeiTHighwayForImageClassification_distillation.forward`, branch 'distillation_LGViT'."""
  hidden_states_last = hidden_last[:, 2:, :]
  hete = [official.cal_hete_loss(features[0], hidden_states_last),
          official.cal_hete_loss(features[3], hidden_states_last),
          official.cal_hete_loss(features[-1], official.DownSampling(3)(hidden_states_last)),
          official.cal_hete_loss(features[4], official.DownSampling(2)(hidden_states_last))]
  conv = [official.cal_homo_loss(features[j], features[3], loss_type="mse", align_type="none") for j in range(3)]
  attn = [official.cal_homo_loss(features[j + 4], features[-1], loss_type="mse", align_type="inner")
          for j in range(3)]
  return sum(hete), sum(conv) + sum(attn)


def _official_stage2(official, exit_logits, features, hidden_last, teacher_logits, labels, c=0.3, homo=0.01,
                     hete=0.01):
  """The official stage-2 loss (`loss_all`), prediction distillation at T = 2 included."""
  import torch
  F = torch.nn.functional
  ce, kl = [], []
  for logits in exit_logits:
    ce.append(torch.nn.CrossEntropyLoss()(logits, labels))
    kl.append(F.kl_div(F.log_softmax(logits / 2, dim=1), F.log_softmax(teacher_logits / 2, dim=1), reduction="sum",
                       log_target=True) * 4 / logits.numel())
  hete_sum, homo_sum = _official_feature_terms(official, features, hidden_last)
  return (1 - c) * sum(ce) + c * sum(kl) + hete * hete_sum + homo * homo_sum


def _random_features(kinds, grid, b=3, c=16, prefix=2, seed=0):
  """Random exit features of the right shapes (local: h w tokens; global_r{k}: ceil(h/k) ceil(w/k)) and the last
  block's tokens."""
  rng = np.random.RandomState(seed)
  h, w = grid
  count = lambda kind: -(-h // int(kind[8:])) * -(-w // int(kind[8:])) if kind.startswith("global") else h * w  # noqa
  features = [rng.standard_normal((b, count(kind), c)).astype(np.float32) for kind in kinds]
  return features, rng.standard_normal((b, prefix + h * w, c)).astype(np.float32)


def test_feature_terms_and_their_gradients_equal_the_official_functions(official):
  import torch
  kinds = LGVIT_KINDS[8]
  features, hidden = _random_features(kinds, (6, 6))
  blocks = tuple(range(3, 11))
  hete, homo = lgvit_distill.feature_terms(dict(zip(blocks, map(jnp.asarray, features))), dict(zip(blocks, kinds)),
                                           jnp.asarray(hidden), (6, 6), 2)
  t_features = [torch.tensor(f, requires_grad=True) for f in features]
  t_hete, t_homo = _official_feature_terms(official, t_features, torch.tensor(hidden))
  assert t_hete.item() > 1.0 and t_homo.item() > 1.0
  np.testing.assert_allclose(hete, t_hete.item(), rtol=1e-5)
  np.testing.assert_allclose(homo, t_homo.item(), rtol=1e-5)
  # d/d features of hete + 0.3 homo: the last local / global exit learns from the homogeneous terms too
  (t_hete + 0.3 * t_homo).backward()

  def total(fs, last):
    h, m = lgvit_distill.feature_terms(dict(zip(blocks, fs)), dict(zip(blocks, kinds)), last, (6, 6), 2)
    return h + 0.3 * m
  grads, grad_last = jit_fast(jax.grad(total, argnums=(0, 1)), [jnp.asarray(f) for f in features], jnp.asarray(hidden))
  for g, t in zip(grads, t_features):
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-7)
  assert not np.any(np.asarray(grad_last))  # the teacher tokens are stopped (the official no_grad backbone)


@pytest.mark.parametrize("kinds,grid,hete_terms,homo_terms", [
    # 4 exits: local 0 and local_1x1 1 are the local group's ends, global 2 (r2) and 3 (r3) the global one's
    (LGVIT_KINDS[4], (6, 6), [(0, None), (1, None), (2, 2), (3, 3)], [(0, 1, "none"), (2, 3, "inner")]),
    # 2 exits: one head per group, its first and last exit are one term; no homogeneous terms
    (LGVIT_KINDS[2], (6, 6), [(0, None), (1, 2)], []),
    # a mix with a linear exit (no features) and two global heads of different strides on a non-square grid
    (("local", "linear", "global_r3", "global_r2"), (4, 6), [(0, None), (2, 3), (3, 2)], [(2, 3, "inner")]),
])
def test_other_placements_pick_the_first_and_last_exit_of_each_group(official, kinds, grid, hete_terms, homo_terms):
  import torch
  features, hidden = _random_features(kinds, grid, seed=1)
  keep = {b: k for b, k in enumerate(kinds) if k != "linear"}
  hete, homo = lgvit_distill.feature_terms({b: jnp.asarray(features[b]) for b in keep}, keep, jnp.asarray(hidden),
                                           grid, 2)
  t = [torch.tensor(f) for f in features]
  patches = hidden[:, 2:]
  teacher = lambda r: patches if r is None else \
      patches.reshape(3, *grid, 16)[:, ::r, ::r].reshape(3, -1, 16)  # noqa: E731  (AvgPool2d(1, r))
  if grid[0] == grid[1]:  # the official DownSampling assumes a square grid
    np.testing.assert_array_equal(official.DownSampling(2)(torch.tensor(patches)).numpy(), teacher(2))
  expected_hete = sum(official.cal_hete_loss(t[b], torch.tensor(teacher(r))).item() for b, r in hete_terms)
  expected_homo = sum(official.cal_homo_loss(t[s], t[d], align_type=a).item() for s, d, a in homo_terms)
  np.testing.assert_allclose(hete, expected_hete, rtol=1e-5)
  np.testing.assert_allclose(homo, expected_homo, rtol=1e-5, atol=0 if homo_terms else 1e-30)


def _variables(model, images, seed=1):
  """Random variables of the model's shapes (no compiled init): parameters 0.1 N(0, 1) (BatchNorm scales 1 + that,
  so the final head's zero init is moved off too), running means 0 and variances 1."""
  shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), images))
  rng = np.random.RandomState(seed)
  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    base = 1.0 if name.endswith(("['scale']", "['var']")) else 0.0
    noise = 0.0 if "batch_stats" in name else 0.1 * rng.standard_normal(leaf.shape)
    return jnp.asarray(base + noise, jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _loss(model, loss_fn, params, batch_stats, images, labels):
  (logits, out), state = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                     mutable=["batch_stats", "intermediates"])
  total, metrics = loss_fn(logits, out, {"label": labels})
  return total, (logits, out, metrics, state["intermediates"])


def _official_config(num_exits):
  return ml_collections.ConfigDict(dict(label_smoothing=0.0, exit_loss=lgvit_distill.official_exit_loss(num_exits, 5)))


IMAGES = np.random.RandomState(0).standard_normal((4, 24, 24, 3)).astype(np.float32)
LABELS = np.array([0, 3, 1, 4])


def test_stage2_loss_of_a_multi_exit_vit_equals_the_official_formula(official):
  import torch
  model = VisionTransformer(**TINY)  # the official 8 exits (4 local, 4 global), 2 prefix tokens
  loss_fn = trainer.base_loss(_official_config(8), model)
  variables = _variables(model, IMAGES)
  total, (logits, out, metrics, sown) = jit_fast(
      lambda v: _loss(model, loss_fn, v["params"], v["batch_stats"], IMAGES, LABELS), variables)
  blocks = range(8)
  assert [out[f"exit_features{b}"].shape for b in blocks] == [(4, 36, 16)] * 4 + [(4, 9, 16)] * 2 + [(4, 4, 16)] * 2
  t = lambda x: torch.tensor(np.asarray(x))  # noqa: E731
  expected = _official_stage2(official, [t(out[f"exit_logits{b}"]) for b in blocks],
                              [t(out[f"exit_features{b}"]) for b in blocks], t(out["block8"]), t(logits), t(LABELS))
  assert float(metrics["lgvit_hete"]) > 0 and float(metrics["lgvit_homo"]) > 0
  np.testing.assert_allclose(total, expected.item(), rtol=1e-5)
  for b in blocks:  # the features in `out` are the ones each head sows
    np.testing.assert_array_equal(out[f"exit_features{b}"], sown[f"exit_{b}"]["features"][0])


@pytest.fixture(scope="module")
def small():
  """A 3-block DeiT with a local and a global exit, random variables, and in one compiled call its stage-2 loss
  (`official_exit_loss(2, 5)`), that loss's gradient and the gradient of the feature terms alone
  (`exit_loss = dict(weights=(0,) * 3, lgvit=dict(hete_weight=1, homo_weight=1))`)."""
  model = VisionTransformer(**{**TINY, "depth": 3, "exits": dict(blocks=(0, 1), head="lgvit")})
  variables = _variables(model, IMAGES)
  official_loss = trainer.base_loss(_official_config(2), model)
  features_only = trainer.base_loss(ml_collections.ConfigDict(
      dict(exit_loss=dict(weights=(0.0,) * 3, lgvit=dict(hete_weight=1.0, homo_weight=1.0)))), model)

  def run(params):
    def both(p):  # one forward pass, both losses
      (logits, out), _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, IMAGES, train=True,
                                     mutable=["batch_stats"])
      total, metrics = official_loss(logits, out, {"label": LABELS})
      return (total, features_only(logits, out, {"label": LABELS})[0]), metrics
    (total, feature_total), pullback, metrics = jax.vjp(both, params, has_aux=True)
    one, zero = jnp.ones([]), jnp.zeros([])
    return feature_total, metrics, pullback((one, zero))[0], pullback((zero, one))[0]
  feature_total, metrics, grads, feature_grads = jit_fast(run, variables["params"])
  return dict(model=model, variables=variables, feature_total=feature_total, metrics=metrics, grads=grads,
              feature_grads=feature_grads)


def test_gradients_reach_the_exit_heads_and_the_frozen_backbone_stays(small):
  params, grads = small["variables"]["params"], small["grads"]
  cfg = ml_collections.ConfigDict(dict(name="adamw", lr=1e-3, weight_decay=0.05, schedule="constant",
                                       lr_multipliers=dict(exit_=1.0, default=0.0)))
  tx, _ = optim.make_optimizer(cfg, 10, small["model"].depth)
  updates, _ = jit_fast(lambda g, p: tx.update(g, tx.init(p), p), grads, params)
  moved = {"/".join(k): bool(np.any(np.asarray(v))) for k, v in flax.traverse_util.flatten_dict(updates).items()}
  exit_leaves = [k for k in moved if k.startswith("exit_")]
  assert len(exit_leaves) > 8 and all(moved[k] for k in exit_leaves)  # every exit head parameter learns
  assert not any(v for k, v in moved.items() if not k.startswith("exit_"))  # the backbone and final head do not
  # without the multipliers the exits' losses would move the blocks they read: the freeze is what stops them
  raw = {"/".join(k): bool(np.any(np.asarray(v))) for k, v in flax.traverse_util.flatten_dict(grads).items()}
  assert raw["encoder/blocks_0/attn/qkv/kernel"] and raw["encoder/blocks_1/mlp/fc1/kernel"]
  # the last block and the final head only feed the (stopped) teachers: no gradient at all
  assert not any(v for k, v in raw.items() if k.startswith(("encoder/blocks_2/", "head", "norm/")))


def test_feature_terms_train_the_heads_transforms_not_their_classifiers(small):
  metrics = small["metrics"]
  np.testing.assert_allclose(small["feature_total"], float(metrics["lgvit_hete"] + metrics["lgvit_homo"]),
                             rtol=1e-6)
  assert float(metrics["lgvit_hete"]) > 0 and float(metrics["lgvit_homo"]) == 0  # one head of each kind: no homo
  grads = flax.traverse_util.flatten_dict(small["feature_grads"])
  flat = {"/".join(k): float(np.abs(np.asarray(v)).max()) for k, v in grads.items()}
  for b in (0, 1):
    head = {k: v for k, v in flat.items() if k.startswith(f"exit_{b}/")}
    transform = [v for k, v in head.items() if not k.startswith((f"exit_{b}/head/", f"exit_{b}/head_dist/"))]
    assert len(transform) >= 3 and min(transform) > 0, b  # conv / BatchNorm / attention parameters
    assert head[f"exit_{b}/head/kernel"] == head[f"exit_{b}/head_dist/kernel"] == 0.0


def test_only_lgvit_exits_put_their_features_in_out():
  model = VisionTransformer(**{**TINY, "depth": 4, "exits": dict(blocks=(0, 1, 2), head=("local", "linear",
                                                                                         "global_r3"))})
  variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  _, out = jax.eval_shape(model.apply, variables, IMAGES)
  assert sorted(k for k in out if k.startswith("exit_")) == ["exit_features0", "exit_features2", "exit_logits0",
                                                              "exit_logits1", "exit_logits2"]
  assert out["exit_features0"].shape == (4, 36, 16) and out["exit_features2"].shape == (4, 4, 16)


@pytest.mark.parametrize("exit_loss,exits,match", [
    (dict(lgvit=dict(homo=0.01)), None, "config.exit_loss.lgvit keys \\['homo'\\]; accepted: homo_weight, "
                                        "hete_weight"),
    (dict(lgvit=0.01), None, "config.exit_loss.lgvit=0.01; accepted: a dict with keys"),
    (dict(lgvit=dict(hete_weight=-1.0)), None, "config.exit_loss.lgvit.hete_weight=-1.0; accepted: a number >= 0"),
    (dict(lgvit=dict(hete_weight=0.01)), dict(blocks=(0, 1)), "config.exit_loss.lgvit needs LGViT exit heads; "
                                                              "exits=.* are linear"),
    (dict(feature_weight=1.0), None, "config.exit_loss keys \\['feature_weight'\\]; accepted: weights, "
                                     "distill_weight, temperature, lgvit"),
])
def test_bad_config_is_one_clear_error(exit_loss, exits, match):
  model = VisionTransformer(**{**TINY, "depth": 4, "exits": exits or dict(blocks=(0, 1), head="lgvit")})
  with pytest.raises(ValueError, match=match):
    trainer.base_loss(ml_collections.ConfigDict(dict(exit_loss=exit_loss)), model)


def test_official_exit_loss_is_the_scripts_coefficients():
  assert lgvit_distill.official_exit_loss(8, 100) == dict(
      weights=(0.7,) * 8 + (0.0,), distill_weight=0.003, temperature=2.0,
      lgvit=dict(homo_weight=0.01, hete_weight=0.01))
