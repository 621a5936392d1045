"""Runs a grid of config-file experiments and tabulates them: top-1, params, GMACs and images/s per cell.

  python -m jaxvit.sweep configs/ablation_components.py --grid mixer=attention,pooling pos_embed=learn,rope_axial
  python -m jaxvit.sweep configs/ablation_components.py --grid mixer=attention,pooling --print-commands  # a cluster

Each cell is `--config=FILE:ARG` with `ARG` = `--arg` plus the cell's `key=value`s, trained by
`python -m jaxvit.main` in its own process under `--workdir/<cell>`. A cell whose `summary.json` exists is
not run again, so an interrupted sweep resumes. The table (markdown) goes to stdout and `--workdir/sweep.md`.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

COLUMNS = (("cell", "cell", "{}"), ("final_top1", "top-1", "{:.4f}"), ("params_m", "params (M)", "{:.3f}"),
           ("gmacs", "GMACs", "{:.4f}"), ("images_per_s", "img/s", "{:.0f}"), ("train_seconds", "train s", "{:.0f}"))


def parse_grid(items) -> list[tuple[str, list[str]]]:
  """`["mixer=a,b", "pos_embed=x"]` -> `[("mixer", ["a", "b"]), ("pos_embed", ["x"])]`."""
  grid = []
  for item in items:
    key, sep, values = item.partition("=")
    if not sep or not key or not values:
      raise ValueError(f"--grid {item!r}: expected key=value1,value2,...")
    grid.append((key, values.split(",")))
  return grid


def cells(grid, base_arg: str = "") -> list[tuple[str, str]]:
  """`(cell name, config arg)` for every combination of the grid's values."""
  keys = [k for k, _ in grid]
  out = []
  for values in itertools.product(*(v for _, v in grid)):
    pairs = [f"{k}={v}" for k, v in zip(keys, values)]
    out.append(("-".join(f"{k}_{v}" for k, v in zip(keys, values)), ",".join(filter(None, [base_arg] + pairs))))
  return out


def load_config(path: str, arg: str):
  """The config file's `get_config(arg)` (its errors name the bad argument before anything runs)."""
  import importlib.util
  sys.path.insert(0, os.getcwd())  # configs import `configs.common` from the repository root
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def images_per_second(config, batch: int = 32) -> float:
  """Inference images/s of the cell's model on this host (random weights, float32)."""
  import jax
  from jaxvit.bench import measure
  from jaxvit.registry import create_model
  from jaxvit.utils import init_variables, input_shape
  model = create_model(config.model.name, **config.model.overrides)
  variables = init_variables(model)
  images = measure.random_images(batch, input_shape(model, batch)[1:])
  compiled = jax.jit(lambda v, x: model.apply(v, x)[0]).lower(variables, images).compile()
  return measure.jax_images_per_second(compiled, variables, images)[0]


def format_table(rows) -> str:
  lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for row in rows:
    cells_ = [fmt.format(row[key]) if isinstance(row.get(key), (int, float)) else str(row.get(key, "-"))
              for key, _, fmt in COLUMNS]
    lines.append("| " + " | ".join(cells_) + " |")
  return "\n".join(lines)


def run(config_path: str, grid, workdir: str, base_arg: str = "", log=print) -> list[dict]:
  """Trains every cell in turn (skipping finished ones) and returns one row per cell."""
  todo = cells(grid, base_arg)
  configs = {name: load_config(config_path, arg) for name, arg in todo}  # fail fast on a bad value
  rows, start = [], time.time()
  for i, (name, arg) in enumerate(todo):
    cell_dir = os.path.join(workdir, name)
    summary_path = os.path.join(cell_dir, "summary.json")
    if os.path.exists(summary_path):
      log(f"[{i + 1}/{len(todo)}] {name}: done before, reading {summary_path}")
    else:
      eta = f", ETA {(time.time() - start) / i * (len(todo) - i):.0f}s" if i else ""
      log(f"[{i + 1}/{len(todo)}] {name}: training{eta}")
      os.makedirs(cell_dir, exist_ok=True)
      command = [sys.executable, "-m", "jaxvit.main", f"--config={config_path}:{arg}", f"--workdir={cell_dir}"]
      done = subprocess.run(command)
      if done.returncode:
        raise RuntimeError(f"cell {name} failed (exit {done.returncode}): {' '.join(command)}")
    with open(summary_path) as f:
      row = dict(json.load(f), cell=name, arg=arg)
    row["images_per_s"] = images_per_second(configs[name])
    rows.append(row)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m jaxvit.sweep", description=__doc__.split("\n")[0])
  p.add_argument("config", help="an experiment config file, e.g. configs/ablation_components.py")
  p.add_argument("--grid", nargs="+", required=True, help="key=value1,value2 ... (the config file's arguments)")
  p.add_argument("--arg", default="", help="config arguments every cell shares, e.g. steps=500")
  p.add_argument("--workdir", default="runs/sweep", help="one sub-directory per cell, and sweep.md")
  p.add_argument("--print-commands", action="store_true", help="print each cell's training command and exit")
  args = p.parse_args(argv)
  try:
    grid = parse_grid(args.grid)
    if args.print_commands:
      for name, arg in cells(grid, args.arg):
        load_config(args.config, arg)
        print(f"python -m jaxvit.main --config={args.config}:{arg} --workdir={os.path.join(args.workdir, name)}")
      return
    rows = run(args.config, grid, args.workdir, args.arg, log=lambda m: print(m, file=sys.stderr, flush=True))
  except (ValueError, RuntimeError) as err:
    sys.exit(f"error: {err}")
  table = format_table(rows)
  with open(os.path.join(args.workdir, "sweep.md"), "w") as f:
    f.write(f"`python -m jaxvit.sweep {' '.join(argv or sys.argv[1:])}`\n\n{table}\n")
  with open(os.path.join(args.workdir, "sweep.json"), "w") as f:
    json.dump(rows, f, indent=2)
  print(table)


if __name__ == "__main__":
  main()
