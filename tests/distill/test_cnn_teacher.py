"""A CNN teacher (DeiT distils from RegNetY-16GF): converted timm weights with BatchNorm statistics,
or a jaxvit run's params and batch_stats, loaded by `load_teacher` for a ViT student."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

import jaxvit

from convert.timm_reference import perturbed, timm_logits
from jaxvit.convert.__main__ import main as convert_main
from jaxvit.distill.teacher import load_teacher
from jaxvit.train import checkpoint, init_from, state as state_lib
from jaxvit.train.mesh import DEFAULT_RULES, make_mesh


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


def test_teacher_from_a_cnn_workdir_carries_its_batch_stats(tmp_path):
  """A training workdir's checkpoint (the train state: `params`, `mutable` = batch_stats)."""
  overrides = dict(num_classes=10, img_size=8, channels=(8, 8, 16, 16), stem_width=8)
  model = jaxvit.create_model("resnet10t", **overrides)
  mesh = make_mesh(dict(data=-1))
  state, _ = state_lib.create_state(model, optax.sgd(0.1), (8, 8, 3), 0, mesh, DEFAULT_RULES)
  state = state.replace(mutable=jax.tree.map(lambda x: x + 0.5, state.mutable))  # as if trained
  checkpoints = checkpoint.Checkpoints(str(tmp_path), asynchronous=False)
  checkpoints.save(3, state, dict(examples_seen=0))
  checkpoints.close()
  saved = init_from.load_variables(str(tmp_path))
  assert sorted(saved) == ["batch_stats", "params"]

  teacher = load_teacher(teacher_config("resnet10t", str(tmp_path), **overrides), "deit_tiny_patch16_224", 10,
                         (8, 8, 3), mesh, DEFAULT_RULES)
  for a, b in zip(*(jax.tree.leaves(jax.device_get(v)) for v in (state.variables(), teacher.variables))):
    np.testing.assert_array_equal(a, b)
  running_var = teacher.variables["batch_stats"]["bn1"]["var"]
  assert running_var.sharding.is_fully_replicated and np.allclose(running_var, 1.5)
