"""Benchmark pages: a markdown table and a PNG plot of images/s against GMACs, labelled per row."""

import os

from jaxvit.bench.run import format_table

DYNAMIC_COLUMNS = (("model", "model", "{}"), ("gmacs", "GMACs", "{:.2f}"), ("images_per_s", "img/s (batch)", "{:.1f}"),
                   ("speedup", "vs unreduced", "{:.2f}x"), ("latency_ms", "latency bs1 (ms)", "{:.1f}"),
                   ("latency_speedup", "bs1 vs unreduced", "{:.2f}x"), ("mfu_matmul", "MFU/matmul", "{:.0%}"))


def plot_speed(rows, path: str, title: str):
  """images/s against GMACs, one labelled point per row (`pip install jaxvit[plot]`)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  crowded = len(rows) > 15  # many models (the components report): a larger, log-log plot with smaller labels
  fig, ax = plt.subplots(figsize=(13, 8) if crowded else (7, 4.5))
  for i, r in enumerate(rows):
    ax.scatter(r["gmacs"], r["images_per_s"], color="tab:blue" if r.get("reduction") else "black", s=12 if crowded
               else None)
    ax.annotate(r.get("reduction") or r["model"], (r["gmacs"], r["images_per_s"]), fontsize=6 if crowded else 8,
                textcoords="offset points", xytext=(4, 4 if i % 2 else -8))
  if crowded:
    ax.set_xscale("log")
    ax.set_yscale("log")
  ax.set_xlabel("GMACs per image")
  ax.set_ylabel(f"images/s (batch {rows[0]['batch']}, {rows[0]['backend']}, {rows[0]['devices']} devices)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_dynamic_report(rows, path: str, command: str) -> str:
  """`docs/dynamic.md`: each token reduction against its unreduced model, and the plot beside it."""
  for r in rows:
    base = next(b for b in rows if not b.get("reduction") and r["model"].startswith(b["model"]))
    if r.get("reduction"):
      r["latency_speedup"] = base["latency_ms"] / r["latency_ms"]
  png = os.path.splitext(path)[0] + ".png"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  plot_speed(rows, png, "token reduction: throughput against compute")
  text = (f"# Dynamic networks: token reduction speed\n\nMeasured by `{command}` on this machine "
          f"({rows[0]['backend']}, {rows[0]['devices']} devices, float32; matmul {rows[0]['matmul_gflops']:.0f} "
          f"GFLOP/s). Throughput at batch {rows[0]['batch']}, latency at batch 1 (median of timed runs).\n\n"
          f"{format_table(rows, DYNAMIC_COLUMNS)}\n\n![images/s against GMACs]({os.path.basename(png)})\n")
  with open(path, "w") as f:
    f.write(text)
  return text
