"""Exact arithmetic of the steps with a fake model (scenic's trainer-test idea), the loss, the optimizer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvit.train import optim, state as state_lib, step as step_lib


class FixedLogits(nn.Module):
  """Returns the logits stored in the batch's images (first pixel row), whatever the weights."""
  @nn.compact
  def __call__(self, images, train=False):
    self.param("w", nn.initializers.zeros, ())
    return images[:, 0, 0, :], {}


def test_eval_step_counts_top1_top5_and_masks():
  logits = np.array([[9, 1, 2, 3, 4, 5, 0],   # label 0: top-1 hit
                     [1, 9, 8, 7, 6, 5, 0],   # label 6: ranked last, miss
                     [1, 2, 9, 8, 7, 6, 5],   # label 6: 5th, top-5 hit only
                     [9, 0, 0, 0, 0, 0, 0]],  # padding (mask 0): ignored
                    np.float32)
  batch = {"image": jnp.asarray(logits)[:, None, None, :], "label": jnp.array([0, 6, 6, 0]),
           "mask": jnp.array([1.0, 1.0, 1.0, 0.0])}
  state = state_lib.TrainState(step=0, params={"w": 0.0}, opt_state=None, mutable={}, ema_params=None, rng=None)
  out = jax.device_get(step_lib.make_eval_step(FixedLogits())(state, batch))
  log_p = jax.nn.log_softmax(logits[:3])
  assert (out["top1"], out["top5"], out["count"]) == (1.0, 2.0, 3.0)
  np.testing.assert_allclose(out["loss"], -(log_p[0, 0] + log_p[1, 6] + log_p[2, 6]), rtol=1e-6)


def test_label_smoothing_loss_by_hand():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  loss, metrics = step_lib.classification_loss(0.3)(logits, {}, {"label": jnp.array([0])})
  target = np.array([0.7 + 0.1, 0.1, 0.1])
  np.testing.assert_allclose(loss, -(target * jax.nn.log_softmax(logits)[0]).sum(), rtol=1e-6)
  assert metrics["accuracy"] == 1.0


def test_no_weight_decay_on_norms_biases_embeddings_tokens():
  params = {"encoder": {"blocks_0": {"attn": {"qkv": {"kernel": 1, "bias": 1}},
                                      "norm1": {"scale": 1, "bias": 1}, "ls1": {"gamma": 1}}},
            "pos_embed": 1, "tokens": {"cls_token": 1}, "head": {"kernel": 1}}
  mask = optim.decay_mask(params)
  assert mask["encoder"]["blocks_0"]["attn"]["qkv"] == {"kernel": True, "bias": False}
  assert mask["encoder"]["blocks_0"]["norm1"] == {"scale": False, "bias": False}
  assert not mask["pos_embed"] and not mask["tokens"]["cls_token"] and mask["head"]["kernel"]


@pytest.mark.parametrize("kind", ["cosine", "linear", "step", "constant"])
def test_schedules_warm_up_then_decay(kind):
  cfg = ml_collections.ConfigDict(dict(lr=1.0, min_lr=0.0, warmup_steps=10, schedule=kind))
  lr = optim.schedule(cfg, 110)
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(0.5) and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(109)) <= 1.0 if kind == "constant" else float(lr(109)) < 0.2


def test_grad_accumulation_averages_k_steps():
  cfg = ml_collections.ConfigDict(dict(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, grad_accum=2))
  tx, _ = optim.make_optimizer(cfg, 10)
  params = {"w": jnp.zeros(())}
  opt = tx.init(params)
  for g in (1.0, 3.0):
    updates, opt = tx.update({"w": jnp.asarray(g)}, opt, params)
    params = optax.apply_updates(params, updates)
  assert float(params["w"]) == -2.0  # one SGD step with the mean gradient (1 + 3) / 2


def test_layer_decay_scales_by_depth_in_both_layouts():
  import jaxvit
  loop = jaxvit.create_model("deit_tiny_patch16_224", depth=3, img_size=32)
  params = jaxvit.init_variables(loop)["params"]
  scales = optim.layer_decay_scales(params, depth=3, decay=0.5)
  assert scales["patch_embed"]["kernel"] == 0.5 ** 4 and scales["pos_embed"] == 0.5 ** 4
  assert scales["encoder"]["blocks_0"]["attn"]["qkv"]["kernel"] == 0.5 ** 3
  assert scales["encoder"]["blocks_2"]["mlp"]["fc1"]["bias"] == 0.5 and scales["head"]["kernel"] == 1.0
  scanned = jaxvit.init_variables(loop.clone(scan=True))["params"]
  stacked = optim.layer_decay_scales(scanned, depth=3, decay=0.5)["encoder"]["blocks"]["attn"]["qkv"]["kernel"]
  np.testing.assert_allclose(stacked.reshape(-1), [0.125, 0.25, 0.5])


def test_layer_decay_shrinks_early_updates():
  cfg = ml_collections.ConfigDict(dict(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, layer_decay=0.5))
  tx, _ = optim.make_optimizer(cfg, 10, depth=1)
  params = {"patch_embed": {"kernel": jnp.zeros(())}, "encoder": {"blocks_0": {"w": jnp.zeros(())}},
            "head": {"kernel": jnp.zeros(())}}
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert jax.tree.map(float, updates) == {"patch_embed": {"kernel": -0.25}, "encoder": {"blocks_0": {"w": -0.5}},
                                          "head": {"kernel": -1.0}}
  with pytest.raises(ValueError, match="layer_decay needs a model with a `depth`"):
    optim.make_optimizer(cfg, 10)


def test_bare_normalize_uses_the_models_mean_and_std():
  from jaxvit.train.trainer import pp_defaults
  vit = ml_collections.ConfigDict(dict(model=dict(name="vit_small_patch16_224")))
  deit = ml_collections.ConfigDict(dict(model=dict(name="deit_small_patch16_224")))
  assert pp_defaults(vit)["normalize"]["mean"] == (0.5, 0.5, 0.5)
  assert pp_defaults(deit)["normalize"]["std"] == (0.229, 0.224, 0.225)
