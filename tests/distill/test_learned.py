"""Objectives with parameters of their own (`jaxvit.distill.learned`): ViTKD against the official
code, OFA-KD's branch size, and every learned objective through the trainer.

VITKD_ORACLE: `yzd-v/cls_KD` `mmcls/models/dis_losses/vitkd.py` (`ViTKDLoss`, float64) run once on
`vitkd_case()`'s inputs, weights and masking noise (its `torch.rand` replaced by that noise).
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvit.distill import feature, learned
from jaxvit.train import trainer
from jaxvit.utils import count_params

VITKD_ORACLE = [({}, 0.017775236001203044),
                (dict(alpha=1e-3, beta=1e-2, mask_ratio=0.25), 2.461503040428247)]


def vitkd_case(b=2, n=16, ds=8, dt=12):
  r = np.random.RandomState(0)
  inputs = dict(low_s=r.randn(b, 2, n, ds), low_t=r.randn(b, 2, n, dt), high_s=r.randn(b, n, ds),
                high_t=r.randn(b, n, dt))
  r = np.random.RandomState(1)
  w = dict(align_low_0_w=r.randn(dt, ds) * 0.3, align_low_0_b=r.randn(dt) * 0.1,
           align_low_1_w=r.randn(dt, ds) * 0.3, align_low_1_b=r.randn(dt) * 0.1,
           align_high_w=r.randn(dt, ds) * 0.3, align_high_b=r.randn(dt) * 0.1, mask_token=r.randn(dt),
           conv1_w=r.randn(dt, dt, 3, 3) * 0.1, conv1_b=r.randn(dt) * 0.1,
           conv2_w=r.randn(dt, dt, 3, 3) * 0.1, conv2_b=r.randn(dt) * 0.1)
  return inputs, w, np.random.RandomState(2).rand(b, n)


@pytest.mark.parametrize("hyper,want", VITKD_ORACLE)
def test_vitkd_matches_the_official_code(hyper, want):
  x, w, noise = vitkd_case()
  linear = lambda v, name: v @ w[name + "_w"].T + w[name + "_b"]  # torch Linear [out, in]
  low_s = np.stack([linear(x["low_s"][:, i], f"align_low_{i}") for i in range(2)], axis=1)
  high_s = linear(x["high_s"], "align_high")
  conv = lambda name: {"kernel": w[name + "_w"].transpose(2, 3, 1, 0), "bias": w[name + "_b"]}  # OIHW -> HWIO
  params = {"mask_token": w["mask_token"], "conv1": conv("conv1"), "conv2": conv("conv2")}
  mask = feature.token_mask(jnp.asarray(noise), hyper.get("mask_ratio", 0.5))
  f32 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)
  generated = learned.ViTKDGenerator((4, 4)).apply({"params": f32(params)}, f32(high_s), mask)
  value = feature.vitkd(f32(low_s), f32(x["low_t"]), generated, f32(x["high_t"]), mask, **hyper)
  np.testing.assert_allclose(float(value), want, rtol=1e-5)


def test_token_mask_masks_the_same_count_in_every_image():
  mask = feature.token_mask(jax.random.uniform(jax.random.key(0), (3, 10)), 0.5)
  np.testing.assert_array_equal(mask.sum(axis=1), [5, 5, 5])
  assert not np.array_equal(mask[0], mask[1])


def test_fitnet_is_the_mean_squared_error_after_the_regressor():
  s, t = jnp.ones((2, 3, 4)), jnp.zeros((2, 3, 4)).at[:, :, 0].set(3.0)
  np.testing.assert_allclose(feature.fitnet(s, t), (4.0 + 3 * 1.0) / 4, rtol=1e-6)
  # the student's distillation token (an extra leading token) is dropped
  np.testing.assert_allclose(feature.fitnet(jnp.concatenate([9 * s[:, :1], s], 1), t), (4.0 + 3.0) / 4, rtol=1e-6)


def test_ofa_branch_has_the_official_size():
  """DeiT-Ti's stage-1 branch (14x14 grid, 1000 classes): one patch merging (LayerNorm(768) + bias-free
  768 -> 192), three timm blocks of width 192 without qkv bias, a 192 -> 1000 classifier."""
  d, c = 192, 1000
  block = 2 * 2 * d + d * 3 * d + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
  want = (2 * 4 * d + 4 * d * d) + 3 * block + (d * c + c)
  branch = learned.OFABranch(1, c, (14, 14), 1)
  params = jax.eval_shape(lambda: branch.init(jax.random.key(0), jnp.zeros((1, 197, d))))["params"]
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == want
  logits = branch.apply(branch.init(jax.random.key(0), jnp.zeros((1, 197, d))), jnp.ones((2, 197, d)))
  assert logits.shape == (2, c)


LEARNED = {  # name: (kind, feature kind, student_layers, teacher_layers, a parameter it must learn)
    "uskd": ("uskd", "", (), (), "uskd_weak"),
    "ctkd": ("ctkd", "", (), (), "ctkd_theta"),
    "fitnet": ("nkd", "fitnet", (0,), (0,), "fitnet_0"),
    "vitkd": ("nkd", "vitkd", (0,), (0,), "vitkd_generator"),
    "ofa": ("ofa", "ofa", (0,), (), "ofa_stage_1"),
}


@pytest.mark.parametrize("name", sorted(LEARNED))
def test_learned_objectives_train_their_parameters_beside_the_student(distill_config, tmp_path, capsys, name):
  kind, feature_kind, student_layers, teacher_layers, learns = LEARNED[name]
  config = distill_config(kind)
  config.distill.feature.update(kind=feature_kind, student_layers=student_layers, teacher_layers=teacher_layers)
  summary = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["steps"] == 8 and "distill_loss" in capsys.readouterr().out
  trained = trainer.setup(config, str(tmp_path / "run"))  # restores the checkpoint
  fresh = trainer.setup(config, str(tmp_path / "fresh"))
  assert jax.tree.structure(trained.state.params) == jax.tree.structure(fresh.state.params)  # the student alone
  moved = flax.traverse_util.flatten_dict(jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                                                       trained.state.loss_params, fresh.state.loss_params))
  assert any(path[0] == learns and changed for path, changed in moved.items()), moved
  assert summary["params_m"] == pytest.approx(count_params(fresh.state.params) / 1e6)
