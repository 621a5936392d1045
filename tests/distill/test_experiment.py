"""`python -m jaxvit.distill.experiment` end to end in smoke mode: teacher, students, the report."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_experiment_trains_teacher_and_students_and_writes_the_table(tmp_path, data_dir):
  out = tmp_path / "distillation.md"
  cmd = [sys.executable, "-m", "jaxvit.distill.experiment", f"--workdir={tmp_path}", "--kinds=none,kd",
         "--seeds=2", "--config_args=runlocal", f"--data_dir={data_dir}", f"--out={out}"]
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "[4/4] kd seed 1: top-1" in proc.stdout
  rows = [line for line in out.read_text().splitlines() if line.startswith("| none") or line.startswith("| kd")]
  assert len(rows) == 2 and rows[1].count(", ") == 1 and " pt |" in rows[1], out.read_text()
  assert sorted(os.listdir(tmp_path)) == sorted(["distillation.md", "teacher", "none_seed0", "none_seed1",
                                                   "kd_seed0", "kd_seed1"])
