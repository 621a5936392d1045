"""Precomputed sparse teacher logits: written once, replayed with the same augmentation and Mixup."""

import numpy as np
import pytest
from events import scalars

from jaxvit.distill import sparse_logits
from jaxvit.train.trainer import train_and_evaluate


@pytest.fixture
def mixed_config(distill_config):
  config = distill_config("kd")
  config.mixup.update(prob=1.0, switch_prob=0.5)  # the replay must include Mixup / CutMix
  return config


def test_saved_logits_train_like_the_live_teacher(mixed_config, tmp_path):
  """All 10 classes kept: the KD loss per step equals the live teacher's up to float16 storage."""
  live = train_and_evaluate(mixed_config, str(tmp_path / "live"))
  sparse_logits.save(mixed_config, str(tmp_path / "logits"), topk=10)
  mixed_config.distill.teacher.logits = str(tmp_path / "logits")
  saved = train_and_evaluate(mixed_config, str(tmp_path / "saved"))
  assert live["steps"] == saved["steps"] == 8
  want, got = scalars(tmp_path / "live", "train/distill_loss"), scalars(tmp_path / "saved", "train/distill_loss")
  assert len(want) == 4
  np.testing.assert_allclose(got, want, rtol=2e-3)  # float16 probabilities: 3 significant digits


def test_top_k_fills_the_rest_uniformly(mixed_config, tmp_path):
  sparse_logits.save(mixed_config, str(tmp_path), topk=3)
  reader = sparse_logits.SparseLogits(str(tmp_path), mixed_config, 10)
  probs = np.exp(reader.log_probs(0))
  assert probs.shape == (32, 10)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=2e-3)
  kept = np.take_along_axis(probs, np.asarray(reader.indices[0]), -1)
  rest = np.sort(probs, -1)[:, :7]
  np.testing.assert_allclose(rest, rest[:, :1].repeat(7, -1), rtol=1e-6)  # one value for the 7 others
  assert np.all(kept.min(-1) >= rest.max(-1) - 1e-6)


@pytest.mark.parametrize("field,value", [("seed", 1), ("batch_size", 64), ("data.pp_train", "decode")])
def test_a_config_that_sees_other_images_is_an_error(mixed_config, tmp_path, field, value):
  sparse_logits.save(mixed_config, str(tmp_path), topk=3)
  section, _, key = field.rpartition(".")
  (mixed_config[section] if section else mixed_config)[key] = value
  with pytest.raises(ValueError, match=f"config.{field}=.* differs from the saved logits"):
    sparse_logits.SparseLogits(str(tmp_path), mixed_config, 10)


@pytest.mark.slow
def test_two_processes_write_the_rows_one_process_writes(mixed_config, tmp_path):
  """`save_logits` in two gloo processes (launch/local.sh): process p's file holds its share of each
  global batch, the one the same process reads when training with two processes."""
  import json
  import os
  import subprocess
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  mixed_config.data.num_shards = 2  # one process reads both shards, as two processes do
  sparse_logits.save(mixed_config, str(tmp_path / "one"), topk=3)
  (tmp_path / "config.json").write_text(mixed_config.to_json())
  (tmp_path / "config.py").write_text(
      "import json, ml_collections\n"
      f"def get_config():\n  return ml_collections.ConfigDict(json.load(open({str(tmp_path / 'config.json')!r})))\n")
  env = dict(os.environ, PYTHONPATH=root, JAXVIT_MODULE="jaxvit.distill.save_logits")
  env.pop("XLA_FLAGS", None)
  run = subprocess.run(["bash", "launch/local.sh", "2", "4", f"--config={tmp_path / 'config.py'}",
                        f"--out={tmp_path / 'two'}", "--topk=3"], cwd=root, env=env, capture_output=True, text=True,
                       timeout=600)
  assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "two" / "process_1.log").read_text()
  assert json.loads((tmp_path / "two" / sparse_logits.META).read_text())["process_count"] == 2
  one = {k: np.load(tmp_path / "one" / f"{k}.p0.npy") for k in ("values", "indices")}
  two = {k: np.concatenate([np.load(tmp_path / "two" / f"{k}.p{p}.npy") for p in (0, 1)], axis=1)
         for k in ("values", "indices")}
  assert two["values"].shape == one["values"].shape == (8, 32, 3)
  np.testing.assert_array_equal(two["indices"], one["indices"])
  np.testing.assert_allclose(two["values"].astype(np.float32), one["values"].astype(np.float32), rtol=1e-3)
