"""Multi-exit ViTs (`jaxvit.dynamic.exits`): exit heads, the joint / distilled loss, the early-exit rules, the
MACs an exit spends, and the threshold sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.dynamic import exits


def test_exits_add_heads_without_changing_the_final_logits():
  plain = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, depth=4, num_classes=5)
  multi = plain.clone(exits=dict(blocks=(1, 2)))
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = multi.init(jax.random.key(1), x)
  logits, out = multi.apply(variables, x)
  assert out["exit_logits1"].shape == out["exit_logits2"].shape == (2, 5) and "exit_logits3" not in out
  plain_params = {k: v for k, v in variables["params"].items() if not k.startswith("exit_")}
  np.testing.assert_array_equal(plain.apply({"params": plain_params}, x)[0], logits)


def test_each_exit_costs_its_blocks_and_the_heads_it_passed():
  model = jaxvit.create_model("deit_small_patch16_224", exits=dict(blocks=(3, 6, 9)))
  macs, depths = exits.exit_costs(model)
  head = 5 * 197 * 384 + 384 * 1000  # LayerNorm over the tokens + the linear classifier on the class token
  plain = jaxvit.create_model("deit_small_patch16_224")
  full = count_macs(plain, jax.eval_shape(lambda: jaxvit.init_variables(plain)),
                    jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["total"]
  assert depths == [4, 7, 10, 12] and macs[-1] == full + 3 * head
  block = (macs[1] - head - macs[0]) / 3  # one block's MACs, from two exits 3 blocks apart
  assert macs[2] - macs[1] == pytest.approx(3 * block + head)


def test_rules_pick_the_first_exit_that_fires():
  confident, unsure = jnp.array([10.0, 0.0, 0.0]), jnp.array([0.1, 0.0, 0.0])
  exit_logits = [jnp.stack([confident, unsure, unsure]), jnp.stack([confident, confident, unsure])]
  final = jnp.stack([unsure, unsure, unsure])
  assert exits.exit_index(exit_logits, final, "confidence", 0.9).tolist() == [0, 1, 2]
  assert exits.exit_index(exit_logits, final, "entropy", 0.1).tolist() == [0, 1, 2]
  assert exits.exit_index(exit_logits, final, "confidence", 1.0).tolist() == [2, 2, 2]  # nothing is that sure
  other = jnp.array([0.0, 5.0, 0.0])  # example 2 changes its mind at exit 1; patience 2 = same argmax twice
  exit_logits = [jnp.stack([confident, confident, confident]), jnp.stack([confident, confident, other])]
  assert exits.exit_index(exit_logits, final, "patience", 2).tolist() == [1, 1, 2]
  with pytest.raises(ValueError, match="rule='margin'; accepted: \\('entropy', 'confidence', 'patience'\\)"):
    exits.exit_index(exit_logits, final, "margin", 0.5)


def test_sweep_trades_accuracy_for_compute():
  labels = np.array([0, 1, 2, 0])
  early = jnp.array([[9.0, 0, 0], [9.0, 0, 0], [0, 0, 0.1], [9.0, 0, 0]])  # sure of 0, 1 (wrong), 3; unsure of 2
  final = jax.nn.one_hot(labels, 3) * 9.0  # always right
  rows = exits.sweep([early], final, labels, macs=[1e9, 3e9], rule="confidence", thresholds=[0.5, 0.99999],
                     depths=[4, 12])
  assert rows[0]["accuracy"] == 0.75 and rows[0]["avg_gmacs"] == 1.5 and rows[0]["exited"] == [0.75, 0.25]
  assert rows[1]["accuracy"] == 1.0 and rows[1]["avg_depth"] == 12 and rows[1]["avg_gmacs"] == 3.0


def test_multi_exit_loss_weights_every_head_and_distills_from_the_final_one():
  from jaxvit.train.step import classification_loss
  ce = classification_loss()
  logits, exit_logits = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([[0.0, 1.0, 0.0]])
  batch = {"label": jnp.array([0])}
  out = {"exit_logits3": exit_logits}
  loss, metrics = exits.multi_exit_loss(ce, weights=(0.3, 1.0), distill_weight=2.0, temperature=2.0)(logits, out,
                                                                                                      batch)
  p, log_q = jax.nn.softmax(logits / 2.0), jax.nn.log_softmax(exit_logits / 2.0)
  expected = ce(logits, out, batch)[0] + 0.3 * ce(exit_logits, out, batch)[0] + \
      2.0 * 4.0 * jnp.sum(p * (jnp.log(p) - log_q))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert metrics["exit_accuracy3"] == 0.0 and metrics["accuracy"] == 1.0
  with pytest.raises(ValueError, match="weights has 3 entries; the model has 1 exits and a final head \\(2\\)"):
    exits.multi_exit_loss(ce, weights=(1, 1, 1))(logits, out, batch)


@pytest.mark.parametrize("overrides,match", [
    (dict(exits=dict(blocks=(3, 11))), "exits blocks=\\(3, 11\\); accepted: increasing blocks 0..10"),
    (dict(exits=dict(blocks=(3,), head="lgvit")), "exits head='lgvit' with 1 exits; accepted: \\[2, 4, 6, 8\\]"),
    (dict(exits=dict(blocks=(3, 5), head=("local",))), "exits head=\\('local',\\); accepted: .* one entry per exit"),
    (dict(exits=dict(blocks=(3,), head="global_r0")), "exits head='global_r0'; accepted: \\('linear', 'lgvit'\\)"),
    (dict(exits=dict(blocks=(3,), head="local"), reduction=dict(kind="tome", r=4)),
     "exits=.*; accepted: linear heads with a token reduction"),
    (dict(exits=dict(at=(3,))), "exits=\\{'at': \\(3,\\)\\}; accepted: dict\\(blocks="),
    (dict(exits=dict(blocks=(3,)), num_classes=0), "exits=.*; accepted: None when num_classes=0"),
])
def test_bad_exits_are_one_clear_error(overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_small_patch16_224", **overrides)


@pytest.mark.parametrize("rule,threshold,head", [("confidence", 0.9, "linear"), ("entropy", 0.3, "linear"),
                                                 ("patience", 2, "linear"),
                                                 ("confidence", 0.9, ("local", "local_1x1", "global_r2"))])
def test_staged_path_runs_only_the_survivors_and_agrees_with_the_full_pass(rule, threshold, head):
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, depth=4, num_classes=5,
                              exits=dict(blocks=(0, 1, 2), head=head))
  x = jax.random.normal(jax.random.key(0), (16, 32, 32, 3))
  variables = model.init(jax.random.key(1), x)
  noise = 0.3 if head == "linear" else 0.05  # LGViT's heads sum unnormalised patch features: smaller noise
  variables["params"] = jax.tree.map(lambda p: p + noise * jax.random.normal(jax.random.key(2), p.shape),
                                     variables["params"])
  logits, out = model.apply(variables, x)
  expected = exits.exit_index([out[f"exit_logits{b}"] for b in (0, 1, 2)], logits, rule, threshold)
  all_preds = [np.asarray(out[f"exit_logits{b}"]).argmax(-1) for b in (0, 1, 2)] + [np.asarray(logits).argmax(-1)]
  staged = exits.StagedEarlyExit(model, variables, rule, threshold)
  preds, chosen = staged.predict(x)
  np.testing.assert_array_equal(chosen, expected)
  np.testing.assert_array_equal(preds, np.choose(expected, all_preds))
  assert len(np.unique(expected)) >= 2  # examples left at different exits: the survivors shrank on the way
  assert len(staged.compiled) <= 4 * 3 and {size for _, size in staged.compiled} <= {4, 8, 16}


def test_lgvit_heads_on_the_exits_train_their_batch_norms_and_cost_what_they_run():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=64, depth=6, num_classes=5,
                              exits=dict(blocks=(0, 1, 2, 3), head="lgvit"))
  assert exits.check_exits(model.exits, model.depth)[1] == ("local", "local_1x1", "global_r2", "global_r3")
  x = jax.random.normal(jax.random.key(0), (4, 64, 64, 3))
  variables = model.init(jax.random.key(1), x)
  assert set(variables["batch_stats"]) == {"exit_0", "exit_1"}  # the local perception heads' BatchNorms
  assert "proj" in variables["params"]["exit_0"] and "proj" not in variables["params"]["exit_1"]  # 3x3 depthwise
  assert "attn" in variables["params"]["exit_2"]
  (logits, out), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert all(out[f"exit_logits{b}"].shape == (4, 5) for b in range(4))
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), updates["batch_stats"],
                       variables["batch_stats"])
  assert all(jax.tree.leaves(moved))
  macs, depths = exits.exit_costs(model)
  linear = exits.exit_costs(model.clone(exits=dict(blocks=(0, 1, 2, 3))))[0]
  assert depths == [1, 2, 3, 4, 6] and macs == sorted(macs)
  assert all(m > l for m, l in zip(macs, linear))  # LGViT's heads cost more than a LayerNorm + linear layer
  c, n = 192, 16  # width and patch tokens: the first exit pays its local head's two 1x1 convs at least
  assert macs[0] - linear[0] > 2 * n * c * c - 5 * 17 * c


def test_depth_weights_follow_the_blocks_each_head_ran():
  model = jaxvit.create_model("deit_tiny_patch16_224", depth=12, exits=dict(blocks=(3, 7)))
  np.testing.assert_allclose(exits.depth_weights(model), np.array([4, 8, 12]) / 24)
