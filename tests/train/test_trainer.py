"""The trainer end to end on digits: results, exact resume, fallback past a corrupt checkpoint, errors."""

import glob
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxvit.train.trainer import train_and_evaluate


def final_params(workdir):
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(f"{workdir}/checkpoints/*") if os.path.basename(p).isdigit())
  restored = ocp.StandardCheckpointer().restore(f"{workdir}/checkpoints/{steps[-1]}/state")
  return steps[-1], restored


def test_trains_evaluates_and_summarises(tiny_config, tmp_path, capsys):
  summary = train_and_evaluate(tiny_config, str(tmp_path))
  out = capsys.readouterr().out
  assert "step 8/8 | accuracy" in out and "steps/s | ETA" in out
  assert "eval at step 8: top-1" in out and "(360 examples)" in out
  assert summary["steps"] == 8 and 0 <= summary["final_top1"] <= summary["final_top5"] <= 1
  assert os.path.exists(tmp_path / "summary.json")
  assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "8"]


def test_resume_is_bit_identical(tiny_config, tmp_path):
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  train_and_evaluate(tiny_config, full)
  train_and_evaluate(tiny_config, resumed)
  # forget the last checkpoint: the run restarts from step 4 and recomputes steps 5..8
  shutil.rmtree(os.path.join(resumed, "checkpoints", "8"))
  train_and_evaluate(tiny_config, resumed)
  (step_a, a), (step_b, b) = final_params(full), final_params(resumed)
  assert step_a == step_b == 8
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_corrupt_latest_checkpoint_falls_back(tiny_config, tmp_path, capsys):
  train_and_evaluate(tiny_config, str(tmp_path))
  for path in glob.glob(str(tmp_path / "checkpoints" / "8" / "state" / "**" / "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")
  tiny_config.total_steps = 10
  summary = train_and_evaluate(tiny_config, str(tmp_path))
  out = capsys.readouterr().out
  assert "warning: checkpoint 8 is unreadable" in out and "resuming from step 4" in out
  assert any(p.startswith("8.unreadable.") for p in os.listdir(tmp_path / "checkpoints"))
  assert summary["steps"] == 10


@pytest.mark.parametrize("field,value,match", [
    ("data.name", "no_such_dataset", "config.data.name='no_such_dataset' is not a TFDS dataset"),
    ("data.name", "folder:/no/such/dir", "is not a folder of <split>/<class>/<image> files"),
    ("model.name", "deit_tiny", "unknown model 'deit_tiny'; did you mean"),
    ("optimizer.name", "adam_w", "config.optimizer.name='adam_w'; accepted: \\('adamw', 'sgd', 'lamb'\\)"),
    ("optimizer.schedule", "cosin", "config.optimizer.schedule='cosin'; accepted"),
    ("batch_size", 36, "config.batch_size=36 must be divisible by the 8 devices"),
    ("mesh.data", 3, "does not fit 8 devices"),
    ("data.pp_train", "decode|jitter", "unknown preprocessing op 'jitter'; accepted"),
])
def test_bad_config_names_the_field(tiny_config, tmp_path, field, value, match):
  section, _, key = field.rpartition(".")
  (tiny_config[section] if section else tiny_config)[key] = value
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(tiny_config, str(tmp_path))


def test_checkpoints_of_another_config_are_an_error_not_a_restart(tiny_config, tmp_path):
  train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.optimizer.name = "sgd"
  with pytest.raises(ValueError, match="fits this config"):
    train_and_evaluate(tiny_config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "8"]


def test_ema_of_weights_is_tracked_and_checkpointed(tiny_config, tmp_path):
  tiny_config.ema_decay = 0.5
  train_and_evaluate(tiny_config, str(tmp_path))
  _, state = final_params(str(tmp_path))
  ema, params = jax.tree.leaves(state["ema_params"]), jax.tree.leaves(state["params"])
  assert len(ema) == len(params) and any(not np.array_equal(a, b) for a, b in zip(ema, params))


def test_fsdp_and_tensor_parallel_meshes_train_like_data_parallel(tiny_config, tmp_path):
  """The same run on data=8, on data=2 x fsdp=2 x model=2 and on model=2 (with FSDP) ends with the same
  parameters; the sharded meshes really split the kernels over `fsdp` (embed) and `model` (heads, mlp)."""
  from jaxvit.train.trainer import setup
  results = {}
  for name, mesh in [("dp", dict(data=8)), ("fsdp_tp", dict(data=2, fsdp=2, model=2)), ("tp", dict(data=4, model=2))]:
    tiny_config.mesh = mesh
    tiny_config.total_steps = 4
    train_and_evaluate(tiny_config, str(tmp_path / name))
    results[name] = final_params(str(tmp_path / name))[1]["params"]
  for name in ("fsdp_tp", "tp"):
    for a, b in zip(jax.tree.leaves(results["dp"]), jax.tree.leaves(results[name])):
      np.testing.assert_allclose(a, b, atol=2e-6)

  tiny_config.mesh = dict(data=2, fsdp=2, model=2)
  shardings = setup(tiny_config, str(tmp_path / "inspect")).shardings.params["encoder"]["blocks_0"]
  assert tuple(shardings["mlp"]["fc1"]["kernel"].spec) == ("fsdp", "model")
  assert tuple(shardings["attn"]["qkv"]["kernel"].spec)[:3] == ("fsdp", None, "model")
