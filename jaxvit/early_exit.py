"""Early-exit evaluation of a trained multi-exit model: accuracy against the depth and MACs actually spent.

  python -m jaxvit.early_exit --config=configs/dynamic_digits.py:kind=exits --workdir=runs/dyn_exits \\
      --rule entropy --thresholds 0.05,0.1,0.2,0.4,0.8 --out docs/early_exit.md

One pass over the eval split collects every exit's logits; each threshold of the rule (`entropy`: exit when the
softmax entropy is below it, `confidence`: when the max probability is above it, `patience`: when the argmax held
for that many exits) then decides, per example, where it would have left (`jaxvit.dynamic.exits`). An example
leaving at an exit is charged its blocks and every exit head it passed. Writes a table and a PNG of accuracy
against average GMACs.
"""

import argparse
import os
import sys

import numpy as np

from jaxvit.cpu import use_all_cores


def collect(config, workdir: str):
  """`(exit_logits [per exit: [N, C]], final_logits [N, C], labels [N], model)` over the eval split."""
  import jax
  from jaxvit.data import pipeline
  from jaxvit.dynamic import exits
  from jaxvit.train import init_from
  from jaxvit.train.trainer import build_model, pp_defaults
  builder = pipeline.get_builder(config.data.name, config.data.get("data_dir"))
  model = build_model(config, builder.info.features["label"].num_classes)
  if not (getattr(model, "exits", None) or getattr(model, "has_exits", False)):
    raise ValueError(f"config.model has no exits (config.model.overrides.exits=dict(blocks=...)): {config.model.name}")
  variables = init_from.load_variables(workdir, "--workdir")
  apply = jax.jit(lambda v, x: model.apply(v, x))
  ds, _ = pipeline.eval_dataset(builder, config.data.eval_split, config.data.pp_eval,
                                batch_size=config.eval_batch_size, pp_defaults=pp_defaults(config))
  finals, labels, per_exit = [], [], None
  for batch in pipeline.as_numpy(ds):
    keep = batch["mask"] > 0
    logits, out = apply(variables, batch["image"])
    keys = exits.exit_keys(out)
    per_exit = per_exit or [[] for _ in keys]
    for store, key in zip(per_exit, keys):
      store.append(np.asarray(out[key])[keep])
    finals.append(np.asarray(logits)[keep])
    labels.append(batch["label"][keep])
  return [np.concatenate(e) for e in per_exit], np.concatenate(finals), np.concatenate(labels), model


def plot(rows, path: str, title: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([r["avg_gmacs"] for r in rows], [r["accuracy"] for r in rows], marker="o")
  for r in rows:
    ax.annotate(f"{r['threshold']:g}", (r["avg_gmacs"], r["accuracy"]), fontsize=8, textcoords="offset points",
                xytext=(4, 4))
  ax.set_xlabel("average GMACs spent per image")
  ax.set_ylabel("top-1")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def format_rows(rows) -> str:
  exits_n = len(rows[0]["exited"])
  head = "| threshold | top-1 | avg depth | avg GMACs | " + " | ".join(f"left at exit {i}" for i in range(exits_n - 1))
  lines = [head + " | ran to the end |", "|" + "---|" * (4 + exits_n)]
  for r in rows:
    lines.append(f"| {r['threshold']:g} | {r['accuracy']:.4f} | {r['avg_depth']:.2f} | {r['avg_gmacs']:.5f} | " +
                 " | ".join(f"{x:.0%}" for x in r["exited"]) + " |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m jaxvit.early_exit", description=__doc__.split("\n")[0])
  p.add_argument("--config", required=True, help="the run's config, path.py[:arg]")
  p.add_argument("--workdir", required=True, help="the trained run's workdir (its newest checkpoint)")
  p.add_argument("--rule", default="entropy", help="entropy, confidence or patience")
  p.add_argument("--thresholds", default="0.05,0.1,0.2,0.4,0.8,1.6", help="comma-separated")
  p.add_argument("--out", help="write this markdown page and a PNG beside it")
  p.add_argument("--data-dir", help="overrides the config's data.data_dir")
  args = p.parse_args(argv)
  use_all_cores()
  from jaxvit.dynamic import exits
  from jaxvit.sweep import load_config
  path, _, arg = args.config.partition(":")
  try:
    if args.rule not in exits.RULES:
      raise ValueError(f"--rule {args.rule!r}; accepted: {exits.RULES}")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    config = load_config(path, arg)
    if args.data_dir:
      config.data.data_dir = args.data_dir
    exit_logits, final, labels, model = collect(config, args.workdir)
  except ValueError as err:
    sys.exit(f"error: {err}")
  macs, depths = exits.exit_costs(model)
  rows = exits.sweep(exit_logits, final, labels, macs, args.rule, thresholds, depths)
  table = format_rows(rows)
  print(table)
  if args.out:
    png = os.path.splitext(args.out)[0] + ".png"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(rows, png, f"early exit ({args.rule}): exits after {depths[:-1]} of {depths[-1]} blocks")
    with open(args.out, "w") as f:
      f.write(f"# Early exit\n\n`python -m jaxvit.early_exit {' '.join(argv or sys.argv[1:])}`\n\n"
              f"{len(labels)} eval examples; full model {macs[-1] / 1e9:.5f} GMACs.\n\n{table}\n\n"
              f"![top-1 against GMACs]({os.path.basename(png)})\n")


if __name__ == "__main__":
  main()
