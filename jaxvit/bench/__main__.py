"""Benchmarks registered models: params, GMACs, images/s, latency, memory, MFU, and timm's speed.

  python -m jaxvit.bench --family swin,pvt_v2 --compare timm
  python -m jaxvit.bench --report components          # docs/components.md, components.png, mixer_scaling.png
  python -m jaxvit.bench --models deit_tiny_patch16_224,deit_small_patch16_224 --batch 32 \
      [--img-size N] [--dtype bfloat16] [--compare timm] [--reduction tome:r=13,tome:r=8] [--json FILE]
  python -m jaxvit.bench --train --models deit_tiny_patch16_224 --batch 16 [--compare timm] [--profile]
"""

import argparse
import json
import sys

from jaxvit.cpu import use_all_cores


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m jaxvit.bench", description=__doc__.split("\n")[0])
  models = p.add_mutually_exclusive_group()
  models.add_argument("--models", help="comma-separated registered names or patterns ('deit_*')")
  models.add_argument("--family", help="comma-separated model families: every model of each ('swin,pvt_v2'; "
                                       "jaxvit.list_families())")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--img-size", type=int, help="input size (default: each model's own)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--compare", choices=("timm",), help="also time timm (PyTorch) on the same input (models timm has)")
  p.add_argument("--runs", type=int, default=5, help="timed runs per measurement (median is reported)")
  p.add_argument("--peak-gflops", type=float, help="the machine's float32 peak (default: nominal from /proc/cpuinfo)")
  p.add_argument("--reduction", help="also measure each model with these token reductions, e.g. tome:r=13,tome:r=8")
  p.add_argument("--report", help="with --reduction: write this markdown page (and a PNG plot beside it), "
                                  "e.g. docs/dynamic.md; or 'components': measure the component models and the "
                                  "token-mixer scaling into docs/components.md")
  p.add_argument("--json", help="also write the rows to this file")
  p.add_argument("--devices", type=int, help="CPU devices to split the batch over (default: one per core)")
  p.add_argument("--train", action="store_true", help="time the train step (forward + backward + AdamW) instead")
  p.add_argument("--profile", action="store_true", help="with --train: where the step's time goes, per HLO op")
  args = p.parse_args(argv)
  if args.profile and not args.train:
    p.error("--profile needs --train")
  if args.reduction and args.train:
    p.error("--reduction times inference; drop --train")
  if args.report == "components":
    if args.models or args.family or args.reduction or args.train:
      p.error("--report components measures its own models; drop --models / --family / --reduction / --train")
  elif not (args.models or args.family):
    p.error("one of --models, --family or --report components is required")
  elif args.report and not args.reduction:
    p.error("--report needs --reduction (or is 'components')")
  use_all_cores(args.devices)  # before JAX starts; a no-op on GPU / TPU hosts
  if args.family:
    import jaxvit
    try:
      args.models = ",".join(n for f in args.family.split(",") for n in jaxvit.list_models(family=f))
    except ValueError as err:
      sys.exit(f"error: {err}")
  from jaxvit.bench.run import TRAIN_COLUMNS, benchmark, benchmark_train, format_table, parse_reductions
  log = lambda msg: print(msg, file=sys.stderr, flush=True)
  if args.report == "components":
    from jaxvit.bench.components import run_components_report
    run_components_report(batch=args.batch, runs=args.runs, log=log,
                          command="python -m jaxvit.bench " + " ".join(argv or sys.argv[1:]))
    print("wrote docs/components.md, docs/components.png, docs/mixer_scaling.png")
    return
  try:
    if args.train:
      rows = benchmark_train(args.models.split(","), batch=args.batch, img_size=args.img_size, dtype=args.dtype,
                             compare=args.compare, runs=args.runs, profile=args.profile, log=log)
    else:
      rows = benchmark(args.models.split(","), batch=args.batch, img_size=args.img_size, dtype=args.dtype,
                       compare=args.compare, runs=args.runs, peak_gflops=args.peak_gflops,
                       reductions=parse_reductions(args.reduction), log=log)
  except ValueError as err:
    sys.exit(f"error: {err}")
  print(format_table(rows, TRAIN_COLUMNS) if args.train else format_table(rows))
  if args.report:
    from jaxvit.bench.report import write_dynamic_report
    write_dynamic_report(rows, args.report, "python -m jaxvit.bench " + " ".join(argv or sys.argv[1:]))
    print(f"wrote {args.report}")
  for row in rows:
    if "profile" in row:
      from jaxvit.bench.profile import format_profile
      print(f"\n{row['model']}, batch {row['batch']}: " + format_profile(row["profile"]))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
