"""Progress lines, TensorBoard / console metrics (clu), and the end-of-run summary."""

import json
import os
import time

import jax
import numpy as np
from clu import metric_writers


def make_writer(workdir: str):
  """TensorBoard event files + console logging; only process 0 writes (DESIGN.md, Metrics)."""
  return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
  """`step 120/1000 | loss 0.412 | accuracy 0.883 | lr 9.1e-04 | 14.2 steps/s | ETA 1m02s`."""

  def __init__(self, total_steps: int, start_step: int):
    self.total, self.last_step, self.last_time = total_steps, start_step, time.time()

  def line(self, step: int, metrics: dict) -> str:
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    parts = [f"step {step}/{self.total}"]
    parts += [f"{k} {v:.3g}" if k != "lr" else f"lr {v:.2e}" for k, v in metrics.items()]
    parts += [f"{rate:.2f} steps/s", f"ETA {duration((self.total - step) / max(rate, 1e-9))}"]
    return " | ".join(parts)


def mean_metrics(history: list[dict]) -> dict:
  """Host means of per-step metric dicts (device arrays fetched once)."""
  history = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in history])) for k in history[0]}


def write_summary(workdir: str, summary: dict, filename: str) -> str:
  """Writes `summary` as JSON to `workdir/filename` (process 0) and returns it as a table."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, filename), "w") as f:
      json.dump(summary, f, indent=2)
  width = max(len(k) for k in summary)
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  return "\n".join(f"{k:<{width}}  {fmt(v)}" for k, v in summary.items())
