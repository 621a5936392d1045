"""`config.distill` through the one trainer: a teacher trained on digits, students distilled from it."""

import pytest

from jaxvit.train.trainer import train_and_evaluate


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory, data_dir):
  from configs import common
  c = common.base_config()
  c.model.name = "vit_tiny_patch16_224"
  c.model.overrides = dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2)
  c.data.update(name="digits", data_dir=data_dir, pp_train="decode", pp_eval="decode", shuffle_buffer=2000)
  c.batch_size, c.eval_batch_size, c.total_steps = 32, 64, 4
  c.log_every = c.eval_every = c.checkpoint_every = 4
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train_and_evaluate(c, workdir)
  return workdir, c


def student(tiny_config, teacher, kind, **distill):
  workdir, teacher_config = teacher
  tiny_config.distill.kind = kind
  tiny_config.distill.teacher.update(name=teacher_config.model.name, init_from=workdir,
                                     overrides=dict(teacher_config.model.overrides))
  tiny_config.distill.update(distill)
  return tiny_config


@pytest.mark.parametrize("kind", ["kd", "dkd", "nkd"])
def test_students_train_with_a_teacher_from_a_workdir(tiny_config, teacher_workdir, tmp_path, capsys, kind):
  config = student(tiny_config, teacher_workdir, kind, log_every=2)
  summary = train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert summary["steps"] == 8
  assert "distill_loss" in out and "teacher_agreement" in out, out


def test_deit_distillation_token_student_uses_its_two_heads(tiny_config, teacher_workdir, tmp_path, capsys):
  config = student(tiny_config, teacher_workdir, "deit_hard")
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
     "does not fit 'vit_tiny_patch16_224' with 10 classes: mis-shaped: encoder/blocks_0/attn/proj/bias \\(16,\\) != \\(32,\\)"),
    ("teacher.init_from", "/no/such/run", "config.init_from='/no/such/run' is neither"),
])
def test_bad_distill_config_names_the_field(tiny_config, teacher_workdir, tmp_path, field, value, match):
  config = student(tiny_config, teacher_workdir, "kd")
  section, _, key = field.rpartition(".")
  (config.distill[section] if section else config.distill)[key] = value
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(config, str(tmp_path))
