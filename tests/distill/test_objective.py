"""`config.distill` through the one trainer: a teacher trained on digits, students distilled from it."""

import pytest

from jaxvit.train.trainer import train_and_evaluate


@pytest.mark.parametrize("kind", ["kd", "dkd", "nkd"])
def test_students_train_with_a_teacher_from_a_workdir(distill_config, tmp_path, capsys, kind):
  config = distill_config(kind)
  summary = train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert summary["steps"] == 8
  assert "distill_loss" in out and "teacher_agreement" in out, out


def test_deit_distillation_token_student_uses_its_two_heads(distill_config, tmp_path, capsys):
  config = distill_config("deit_hard")
  config.model.name = "deit_tiny_distilled_patch16_224"
  summary = train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 8 and "distill_loss" in capsys.readouterr().out


def test_teacher_free_kd_needs_no_teacher(tiny_config, tmp_path):
  tiny_config.distill.kind = "tf_kd"
  assert train_and_evaluate(tiny_config, str(tmp_path))["steps"] == 8


@pytest.mark.parametrize("field,value,match", [
    ("kind", "kdd", "config.distill.kind='kdd'; accepted: \\('kd'"),
    ("hyper", {"tau": 2.0}, "config.distill.hyper has \\['tau'\\] for kind='kd'; accepted: \\['temperature'\\]"),
    ("teacher.overrides", {"img_size": 8, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2},
     "does not fit config.distill.teacher 'vit_tiny_patch16_224': mis-shaped: encoder/blocks_0/attn/proj/bias \\(16,\\) -> \\(32,\\)"),
    ("teacher.init_from", "/no/such/run", "config.distill.teacher.init_from='/no/such/run' is neither"),
    ("teacher.overrides", {"img_size": 8, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2,
                           "num_classes": 7}, "does not predict the student's 10 classes: head/.* replaced"),
])
def test_bad_distill_config_names_the_field(distill_config, tmp_path, field, value, match):
  config = distill_config("kd")
  section, _, key = field.rpartition(".")
  (config.distill[section] if section else config.distill)[key] = value
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(config, str(tmp_path))


def test_deit_distillation_recipe_on_mock_imagenet(tmp_path):
  """The ImageNet recipe's path with a teacher saved as `python -m jaxvit.convert` writes it (random
  weights, at another resolution: its position embeddings are resampled to the student's)."""
  import jax
  import jax.numpy as jnp
  import tensorflow_datasets as tfds
  from configs import deit_distill_imagenet
  from jaxvit import create_model
  from jaxvit.convert import save_converted
  teacher = dict(depth=1, img_size=96)
  variables = create_model("deit_tiny_patch16_224", **teacher).init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))
  save_converted(str(tmp_path / "teacher"), variables, "deit_tiny_patch16_224", teacher)
  config = deit_distill_imagenet.get_config(f"teacher=deit_tiny_patch16_224,teacher_ckpt={tmp_path / 'teacher'},"
                                            f"runlocal")
  config.distill.teacher.overrides = dict(depth=1)
  config.async_checkpoints = False  # mock_data swaps in a fake file system while a dataset is built
  assert config.model.name == "deit_tiny_distilled_patch16_224" and config.distill.kind == "deit_hard"
  with tfds.testing.mock_data(num_examples=64):
    summary = train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["steps"] == 6 and summary["dataset"] == "imagenet2012"


def test_deit_distillation_recipe_rejects_unknown_student():
  from configs import deit_distill_imagenet
  with pytest.raises(ValueError, match="student='base'; accepted: \\('tiny', 'small'\\)"):
    deit_distill_imagenet.get_config("student=base")


@pytest.mark.parametrize("feature", ["vitkd", "tinymim", "manifold", "fitnet", "attention_map", "ofa"])
@pytest.mark.parametrize("runlocal", [False, True])
def test_deit_distillation_recipe_pairs_valid_blocks_for_every_feature_objective(feature, runlocal):
  from configs import deit_distill_imagenet
  from jaxvit import create_model
  from jaxvit.distill import objective
  kind = {"vitkd": "nkd", "ofa": "ofa"}.get(feature, "kd")
  config = deit_distill_imagenet.get_config(f"kind={kind},feature={feature}" + (",runlocal" if runlocal else ""))
  student = create_model(config.model.name, **config.model.overrides)
  teacher = create_model(config.distill.teacher.name)
  objective.check(config.distill)
  pairs = objective.feature_pairs(config.distill.feature, student.depth, teacher.depth)
  assert pairs and config.distill.feature.kind == feature
  if feature in ("tinymim", "attention_map"):
    assert student.num_heads == teacher.num_heads
