"""Does distillation help? One teacher, the same student trained with each loss and several seeds.

  python -m jaxvit.distill.experiment --workdir=runs/distill_digits

Trains the teacher (`configs/default.py`) unless `--teacher` names a finished run, then the student
of `configs/distill_digits.py` once per `--kinds` x `--seeds` with the same budget, and writes the
table of test top-1 (mean, spread, every seed) to `--out`. Finished runs are read back, not re-run.
"""

import importlib.util
import json
import os
import statistics
import sys
import time

from absl import app, flags, logging

flags.DEFINE_string("workdir", "runs/distill_digits", "where the teacher and every student run live")
flags.DEFINE_string("teacher", None, "a finished teacher workdir (default: train configs/default.py in workdir/teacher)")
flags.DEFINE_list("kinds", ["none", "kd", "dkd", "nkd", "deit_hard"], "config.distill.kind values; none = no teacher")
flags.DEFINE_integer("seeds", 3, "seeds per kind")
flags.DEFINE_string("config", "configs/distill_digits.py", "the student's config file (arguments kind, seed, teacher)")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for digits")
flags.DEFINE_string("config_args", "", "extra config arguments for teacher and students (e.g. runlocal)")
flags.DEFINE_string("out", "docs/distillation.md", "the markdown report")
FLAGS = flags.FLAGS


def load_config(path: str, arg: str):
  if os.getcwd() not in sys.path:  # configs import `configs.common`, as under `python -m jaxvit.main`
    sys.path.insert(0, os.getcwd())
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  if FLAGS.data_dir:
    config.data.data_dir = FLAGS.data_dir
  return config


def run(config, workdir: str) -> dict:
  """The run's summary; trains only if `workdir` has none yet."""
  from jaxvit.train.trainer import train_and_evaluate
  path = os.path.join(workdir, "summary.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return train_and_evaluate(config, workdir)


def report(results: dict, teacher: dict, student, seeds: int, minutes: float) -> str:
  base = statistics.mean(results["none"]) if "none" in results else None
  lines = [
      "# Distillation on digits: what helps",
      "",
      "Measured by `python -m jaxvit.distill.experiment " + " ".join(sys.argv[1:]) + "`",
      f"on this machine in {minutes:.1f} minutes. Teacher: `configs/default.py` (ViT dim 64, depth 4), "
      f"test top-1 {teacher['final_top1']:.4f}. Student: `configs/distill_digits.py` (ViT dim "
      f"{student.model.overrides.embed_dim}, depth {student.model.overrides.depth}, {student.total_steps} steps), the same budget, data order and initialisation per seed for every loss; "
      f"each loss at its official defaults (`jaxvit.distill`). {seeds} seeds; test set of 360 images.",
      "",
      "| loss | test top-1 (mean +- std) | vs no teacher | per seed |",
      "|---|---|---|---|",
  ]
  for kind, accs in results.items():
    mean = statistics.mean(accs)
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    delta = "" if base is None or kind == "none" else f"{100 * (mean - base):+.2f} pt"
    lines.append(f"| {kind} | {100 * mean:.2f} +- {100 * spread:.2f} | {delta} | "
                 f"{', '.join(f'{100 * a:.2f}' for a in accs)} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
  from jaxvit import cpu
  cpu.use_all_cores()
  started = time.time()
  teacher_dir = FLAGS.teacher or os.path.join(FLAGS.workdir, "teacher")
  print(f"teacher: {teacher_dir}", flush=True)
  teacher = run(load_config("configs/default.py", FLAGS.config_args), teacher_dir) if not FLAGS.teacher else \
      json.load(open(os.path.join(teacher_dir, "summary.json")))
  results, jobs, students_started = {}, [(k, s) for k in FLAGS.kinds for s in range(FLAGS.seeds)], time.time()
  for i, (kind, seed) in enumerate(jobs):
    t0 = time.time()
    config = load_config(FLAGS.config, f"kind={kind},seed={seed},teacher={os.path.abspath(teacher_dir)},{FLAGS.config_args}")
    summary = run(config, os.path.join(FLAGS.workdir, f"{kind}_seed{seed}"))
    results.setdefault(kind, []).append(summary["final_top1"])
    elapsed = time.time() - students_started
    print(f"[{i + 1}/{len(jobs)}] {kind} seed {seed}: top-1 {summary['final_top1']:.4f} ({time.time() - t0:.0f} s; "
          f"ETA {elapsed / (i + 1) * (len(jobs) - i - 1) / 60:.1f} min)", flush=True)
  text = report(results, teacher, config, FLAGS.seeds, (time.time() - started) / 60)
  os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
  with open(FLAGS.out, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  app.run(main)
