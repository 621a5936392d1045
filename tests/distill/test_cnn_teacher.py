"""A CNN teacher (DeiT distils from RegNetY-16GF): converted timm weights with BatchNorm statistics,
or a jaxvit run's params and batch_stats, loaded by `load_teacher` for a ViT student."""

import jax
import ml_collections
import numpy as np
import pytest

from convert.timm_reference import perturbed, timm_logits
from jaxvit.convert.__main__ import main as convert_main
from jaxvit.distill.teacher import load_teacher
from jaxvit.train import init_from
from jaxvit.train.mesh import DEFAULT_RULES, make_mesh
from jaxvit.train.trainer import train_and_evaluate


def teacher_config(name, init_from_dir, **overrides):
  return ml_collections.ConfigDict(dict(name=name, init_from=init_from_dir, overrides=overrides))


@pytest.mark.parity
def test_converted_regnety_teaches_with_timms_logits(tmp_path):
  from safetensors.torch import save_file
  reference = perturbed("regnety_002", num_classes=10)
  save_file(reference.state_dict(), str(tmp_path / "regnety.safetensors"))
  convert_main(["--model", "regnety_002", "--checkpoint", str(tmp_path / "regnety.safetensors"),
                "--out", str(tmp_path / "converted"), "--num-classes", "10"])

  mesh = make_mesh(dict(data=-1))
  teacher = load_teacher(teacher_config("regnety_002", str(tmp_path / "converted")), "deit_tiny_patch16_224", 10,
                         (64, 64, 3), mesh, DEFAULT_RULES)
  assert sorted(teacher.variables) == sorted(teacher.shardings) == ["batch_stats", "params"]
  assert teacher.model.img_size == (64, 64)  # the student's input size
  images = np.random.RandomState(0).standard_normal((8, 64, 64, 3)).astype(np.float32)
  logits, out = jax.jit(teacher.outputs)(teacher.variables, images)
  expected = timm_logits(reference, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
  assert out["stage3"].shape == (8, 2, 2, teacher.model.num_features)


def test_teacher_from_a_cnn_run_carries_its_batch_stats(tiny_config, tmp_path):
  tiny_config.model.name = "resnet10t"
  tiny_config.model.overrides = dict(img_size=8, channels=(8, 8, 16, 16), stem_width=8)
  tiny_config.total_steps = tiny_config.checkpoint_every = 2
  train_and_evaluate(tiny_config, str(tmp_path))
  saved = init_from.load_variables(str(tmp_path))
  assert sorted(saved) == ["batch_stats", "params"]

  mesh = make_mesh(dict(data=-1))
  teacher = load_teacher(teacher_config("resnet10t", str(tmp_path), **tiny_config.model.overrides),
                         "deit_tiny_patch16_224", 10, (8, 8, 3), mesh, DEFAULT_RULES)
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(jax.device_get(teacher.variables))):
    np.testing.assert_array_equal(a, b)
  running_var = teacher.variables["batch_stats"]["bn1"]["var"]
  assert running_var.sharding.is_fully_replicated and not np.allclose(running_var, 1.0)  # trained, not init
