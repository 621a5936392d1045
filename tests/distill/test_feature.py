"""Feature distillation: relation losses against the official code's values, and through the trainer.

ORACLE values come from running the official functions (ManifoldKD `losses.py`, TinyMIM
`models_tinymim.py`; files and commits in the docstrings) on `inputs()` in float64, once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvit.distill import feature
from jaxvit.train.trainer import train_and_evaluate

MANIFOLD_PATCH, MANIFOLD_SAMPLE, MANIFOLD_RANDOM = 0.273558942685228, 0.09267832044928329, 0.37279452727803636
TINYMIM_QK, TINYMIM_VV = 0.7595091579377802, 0.4921991916911982


def inputs():
  rng = np.random.RandomState(0)
  fs, ft = rng.randn(2, 5, 6), rng.randn(2, 5, 8)  # [B, N, D]: widths differ, relations do not
  qs, ks, vs = rng.randn(3, 2, 2, 5, 4)  # [B, H, N, d]
  qt, kt, vt = rng.randn(3, 2, 2, 5, 4)
  attn = lambda q, k: jax.nn.softmax(jnp.asarray(q @ k.swapaxes(-1, -2) * 4 ** -0.5, jnp.float32), axis=-1)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return f32(fs), f32(ft), attn(qs, ks), f32(vs), attn(qt, kt), f32(vt)


def test_manifold_terms_match_the_official_code():
  fs, ft, *_ = inputs()
  patch, sample, random = feature.manifold_terms(fs, ft, jnp.array([0, 3, 6, 9]))
  np.testing.assert_allclose([patch, sample, random], [MANIFOLD_PATCH, MANIFOLD_SAMPLE, MANIFOLD_RANDOM], rtol=1e-5)


def test_manifold_drops_the_students_extra_leading_tokens():
  fs, ft, *_ = inputs()
  with_cls = jnp.concatenate([jnp.full((2, 1, 6), 7.0), fs], axis=1)
  for a, b in zip(feature.manifold_terms(with_cls, ft, jnp.arange(4)), feature.manifold_terms(fs, ft, jnp.arange(4))):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_manifold_weights_and_random_draw():
  fs, ft, *_ = inputs()
  value = feature.manifold(fs, ft, rng=jax.random.key(0), num_random=10)  # all 10 tokens: order does not matter
  patch, sample, random = feature.manifold_terms(fs, ft, jnp.arange(10))
  np.testing.assert_allclose(value, 4 * patch + 0.1 * sample + 0.2 * random, rtol=1e-5)


def test_tinymim_relations_match_the_official_code():
  _, _, attn_s, v_s, attn_t, v_t = inputs()
  np.testing.assert_allclose(feature.attention_map(attn_s, attn_t), TINYMIM_QK, rtol=1e-5)
  np.testing.assert_allclose(feature.tinymim(attn_s, v_s, attn_t, v_t), TINYMIM_QK + TINYMIM_VV, rtol=1e-5)


def test_relation_losses_are_zero_for_identical_inputs_and_send_no_gradient_to_the_teacher():
  fs, _, attn_s, v_s, _, _ = inputs()
  assert float(feature.tinymim(attn_s, v_s, attn_s, v_s)) == pytest.approx(0.0, abs=1e-6)
  grads = jax.grad(lambda s, t: feature.manifold(s, t, rng=jax.random.key(1)), argnums=(0, 1))(fs + 0.5, fs)
  assert np.any(grads[0] != 0) and np.all(grads[1] == 0)


def test_head_counts_must_match():
  _, _, attn_s, v_s, _, _ = inputs()
  with pytest.raises(ValueError, match="same head count: student 2, teacher 1"):
    feature.attention_map(attn_s, attn_s[:, :1])


@pytest.mark.parametrize("kind,student_layers,teacher_layers", [
    ("manifold", (0,), (0,)), ("attention_map", (-1,), (0,)), ("tinymim", (0,), (-1,))])
def test_feature_objectives_train_through_the_trainer(distill_config, tmp_path, capsys, kind, student_layers,
                                                       teacher_layers):
  config = distill_config("nkd")
  config.distill.feature.update(kind=kind, student_layers=student_layers, teacher_layers=teacher_layers)
  summary = train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert summary["steps"] == 8 and "feature_loss" in out and "distill_loss" in out


@pytest.mark.parametrize("field,value,match", [
    ("kind", "fitnets", "config.distill.feature.kind='fitnets'; accepted: \\('manifold'"),
    ("teacher_layers", (0, 1), "student_layers=\\[0\\] and teacher_layers=\\[0, 1\\] must pair up"),
    ("student_layers", (3,), "student_layers=\\[3\\]: blocks are 0..0"),
    ("hyper", {"patch": 1.0}, "config.distill.feature.hyper has \\['patch'\\] for kind='manifold'; accepted: "
                              "\\['patch_weight'"),
])
def test_bad_feature_config_names_the_field(distill_config, tmp_path, field, value, match):
  config = distill_config("kd")
  config.distill.feature.update(kind="manifold", student_layers=(0,), teacher_layers=(0,))
  config.distill.feature[field] = value
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(config, str(tmp_path))
