"""`python -m jaxvit.main` in real subprocesses: device counts, preemption, eval-only, NaN."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from events import scalars

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


def run_main(workdir, data_dir, *flags, devices=8, wait=True):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=ROOT)
  cmd = [sys.executable, "-m", "jaxvit.main", "--config=configs/default.py:runlocal", f"--workdir={workdir}",
         f"--config.data.data_dir={data_dir}", "--config.model.overrides.depth=1", *flags]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=600)
  return proc.returncode, out


def test_one_device_and_eight_devices_give_the_same_loss_curve(tmp_path, data_dir):
  curves = []
  for devices in (1, 8):
    code, out = run_main(tmp_path / f"d{devices}", data_dir, "--config.log_every=1", devices=devices)
    assert code == 0, out
    curves.append(scalars(tmp_path / f"d{devices}", "train/loss"))
  assert len(curves[0]) == 6
  np.testing.assert_allclose(curves[0], curves[1], rtol=2e-5)


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, data_dir):
  proc = run_main(tmp_path, data_dir, "--config.total_steps=100000", "--config.log_every=1",
                  "--config.checkpoint_every=100000", wait=False)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("step 3/"):
      proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, "".join(lines)
  saved = [l for l in lines if l.startswith("SIGTERM: saved a checkpoint at step")]
  assert saved, "".join(lines)
  step = int(saved[0].split("step ")[1].split(";")[0])
  assert str(step) in os.listdir(tmp_path / "checkpoints")
  code, out = run_main(tmp_path, data_dir, "--eval_only")
  assert code == 0 and f"step      {step}" in out, out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
  code, out = run_main(tmp_path, data_dir, "--config.total_steps=4", "--config.checkpoint_every=2")
  assert code == 0, out
  code, out = run_main(tmp_path, data_dir, "--config.total_steps=12", "--config.optimizer.lr=1e30",
                       "--config.optimizer.warmup_steps=0", "--config.log_every=1")
  assert code == 1 and "error: loss is nan" in out and "The last good checkpoint" in out, out
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_two_processes_match_one_process(tmp_path, data_dir):
  flags = ["--config=configs/default.py:runlocal", f"--config.data.data_dir={data_dir}",
           "--config.model.overrides.depth=1", "--config.data.num_shards=2", "--config.log_every=1"]
  code, out = run_main(tmp_path / "one", data_dir, "--config.data.num_shards=2", "--config.log_every=1")
  assert code == 0, out
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  two = subprocess.run(["bash", "launch/local.sh", "2", "4", f"--workdir={tmp_path / 'two'}", *flags], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert two.returncode == 0, two.stdout + two.stderr + open(tmp_path / "two" / "process_1.log").read()
  one_curve, two_curve = scalars(tmp_path / "one", "train/loss"), scalars(tmp_path / "two", "train/loss")
  assert len(one_curve) == 6
  np.testing.assert_allclose(one_curve, two_curve, rtol=2e-5)
  np.testing.assert_allclose(scalars(tmp_path / "one", "eval/loss"), scalars(tmp_path / "two", "eval/loss"),
                             rtol=2e-5)
