"""The benchmark loop behind `python -m jaxvit.bench`: one row of measurements per model."""

import statistics
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxvit.bench import flops, measure
from jaxvit.registry import create_model, list_models
from jaxvit.utils import count_params, init_variables, input_shape

COLUMNS = (("model", "model", "{}"), ("img_size", "res", "{}"), ("devices", "devices", "{}"), ("params_m", "params (M)", "{:.2f}"),
           ("gmacs", "GMACs", "{:.2f}"), ("executed_gmacs", "GMACs executed", "{:.2f}"),
           ("xla_gflops", "XLA GFLOPs", "{:.2f}"),
           ("images_per_s", "img/s", "{:.1f}"), ("latency_ms", "latency bs1 (ms)", "{:.1f}"),
           ("peak_mem_mb", "peak mem/device (MB)", "{:.0f}"), ("mfu_matmul", "MFU/matmul", "{:.0%}"),
           ("mfu_peak", "MFU/peak", "{:.0%}"), ("speedup", "vs unreduced", "{:.2f}x"),
           ("timm_images_per_s", "timm img/s", "{:.1f}"), ("vs_timm", "jaxvit/timm", "{:.2f}x"))


def parse_reductions(spec: str | None) -> list[dict]:
  """`"tome:r=13,tome:r=8,prop_attn=False"` -> `[dict(kind="tome", r=13), dict(kind="tome", r=8, prop_attn=False)]`:
  a `kind:` starts a reduction, later `key=value` items belong to it."""
  import ast
  out = []
  for item in (i.strip() for i in (spec or "").split(",") if i.strip()):
    if ":" in item:
      kind, item = item.split(":", 1)
      out.append({"kind": kind})
    if not out or "=" not in item:
      raise ValueError(f"--reduction item {item!r}: expected kind:key=value[,key=value...]")
    key, value = item.split("=", 1)
    try:
      out[-1][key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[-1][key] = value
  return out


def reduction_label(reduction: dict) -> str:
  return reduction["kind"] + ":" + ",".join(f"{k}={v}" for k, v in reduction.items() if k != "kind")


def expand(patterns) -> list[str]:
  """Registered names for comma-separated names or shell patterns, in the order given."""
  names = []
  for pattern in (p.strip() for p in patterns if p.strip()):
    matched = list_models(pattern) if any(c in pattern for c in "*?[") else [pattern]
    if not matched:
      raise ValueError(f"--models pattern {pattern!r} matches no registered model")
    names += [n for n in matched if n not in names]
  return names


def benchmark(patterns, *, batch=32, img_size=None, dtype="float32", compare=None, runs=5, peak_gflops=None,
              matmul_n=4096, reductions=(), variants=None, latency=True, log=print) -> list[dict]:
  """Measures each model, and each model with each of `reductions` (`model.reduction` dicts, with
  its speed-up over the unreduced model); returns rows with the keys of `COLUMNS` (and a few more).
  `variants` `{label: (name, overrides)}` measures those models instead of `patterns`; `latency=False` skips
  the batch-1 latency."""
  names = expand(patterns) if variants is None else []
  devices = jax.local_devices()
  if batch % len(devices):
    raise ValueError(f"--batch={batch} must be a multiple of the {len(devices)} local devices (or set --devices)")
  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
  data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  size = {} if img_size is None else dict(img_size=img_size)
  models = {}  # (name, label) -> model; fails fast on a bad name, size or reduction, before any timing
  for n in names:
    models[n, ""] = create_model(n, dtype=jnp.dtype(dtype), **size)
    for reduction in reductions:
      models[n, reduction_label(reduction)] = create_model(n, dtype=jnp.dtype(dtype), reduction=reduction, **size)
  for label, (n, overrides) in (variants or {}).items():
    models[label, ""] = create_model(n, dtype=jnp.dtype(dtype), **(size | overrides))
  log(f"measuring the {jax.default_backend()} matmul peak ({matmul_n}^3, float32)...")
  matmul = measure.matmul_peak(matmul_n)
  peak, source = (peak_gflops * 1e9, "--peak-gflops") if peak_gflops else measure.nominal_cpu_peak()
  log(f"matmul: {matmul / 1e9:.1f} GFLOP/s; peak: {peak / 1e9:.1f} GFLOP/s ({source})")
  rows, start, unreduced = [], time.time(), {}
  for i, (name, label) in enumerate(models):
    eta = "" if not i else f", ETA {(time.time() - start) / i * (len(models) - i):.0f}s"
    log(f"[{i + 1}/{len(models)}] {name} {label}: compiling{eta}")
    model = models[name, label]
    variables = init_variables(model)
    shape = input_shape(model, batch)
    images = jax.device_put(measure.random_images(batch, shape[1:]), data)
    variables = jax.device_put(variables, replicated)
    apply = jax.jit(lambda v, x, model=model: model.apply(v, x)[0])
    compiled = apply.lower(variables, images).compile()
    macs = flops.count_macs(model, variables, jax.ShapeDtypeStruct((1,) + shape[1:], jnp.float32))["total"]
    ips, _ = measure.jax_images_per_second(compiled, variables, images, runs)
    log(f"    {ips:.1f} img/s at batch {batch}" + ("; timing batch 1" if latency else ""))
    seconds = float("nan")
    if latency:
      one = jax.device_put(images[:1], devices[0])
      one_variables = jax.device_put(variables, devices[0])
      single = apply.lower(one_variables, one).compile()
      seconds = statistics.median(measure.time_runs(lambda: jax.block_until_ready(single(one_variables, one)),
                                                    runs=runs, warmup=2, min_seconds=1.0))
    achieved = 2 * macs * ips
    per_device = batch // len(devices)  # XLA's cost and memory analyses describe one device's program
    row = dict(model=f"{name} + {label}" if label else name, img_size=shape[1], batch=batch, dtype=dtype,
               params_m=count_params(variables["params"]) / 1e6,
               gmacs=macs / 1e9, xla_gflops=flops.xla_cost(compiled).get("flops", float("nan")) / per_device / 1e9,
               images_per_s=ips, latency_ms=seconds * 1e3,
               peak_mem_mb=measure.memory_bytes(compiled).get("peak", float("nan")) / 2 ** 20,
               mfu_matmul=achieved / matmul, mfu_peak=achieved / peak if peak else float("nan"),
               matmul_gflops=matmul / 1e9, peak_gflops=peak / 1e9, backend=jax.default_backend(),
               devices=len(devices))
    if getattr(model, "DYNAMIC_LOSS", None):  # an adaptive model (A-ViT, AdaViT): `out["macs"]` its masks executed
      # on this batch, per image
      executed = jax.jit(lambda v, x, model=model: model.apply(v, x)[1]["macs"])(variables, images)
      row["executed_gmacs"] = float(jnp.mean(executed)) / 1e9
    if label:
      row["reduction"], row["speedup"] = label, ips / unreduced[name]
    else:
      unreduced[name] = ips
    if compare == "timm" and not label and measure.timm_has(name):
      log("    timm (PyTorch, float32) on the same input")
      row["timm_images_per_s"] = measure.timm_images_per_second(name, batch, shape[1], runs)
      row["vs_timm"] = ips / row["timm_images_per_s"]
    rows.append(row)
  return rows


TRAIN_COLUMNS = (("model", "model", "{}"), ("img_size", "res", "{}"), ("batch", "batch", "{}"),
                 ("devices", "devices", "{}"), ("steps_per_s", "steps/s", "{:.2f}"),
                 ("images_per_s", "img/s", "{:.1f}"), ("mfu_matmul", "MFU/matmul", "{:.0%}"),
                 ("timm_steps_per_s", "timm steps/s", "{:.2f}"), ("vs_timm", "jaxvit/timm", "{:.2f}x"))


def benchmark_train(patterns, *, batch=16, img_size=None, dtype="float32", compare=None, runs=5, matmul_n=4096,
                    profile=False, log=print) -> list[dict]:
  """Training steps/s (forward + backward + AdamW) per model, optionally against timm; with
  `profile`, each row's `profile` holds the step's time per HLO op (`jaxvit.bench.profile`)."""
  from jaxvit.bench import profile as profile_lib, train
  names = expand(patterns)
  for name in names:
    create_model(name, **({} if img_size is None else dict(img_size=img_size)))  # fail fast on bad input
  if batch % jax.local_device_count():
    raise ValueError(f"--batch={batch} must be a multiple of the {jax.local_device_count()} local devices")
  matmul = measure.matmul_peak(matmul_n)
  rows = []
  for i, name in enumerate(names):
    log(f"[{i + 1}/{len(names)}] {name}: compiling and timing the train step (batch {batch})")
    run, hlo_text, macs = train.jaxvit_train_step(name, batch, img_size, dtype)
    steps = 1 / statistics.median(measure.time_runs(run, runs=runs, warmup=2))
    size = img_size or create_model(name).img_size
    row = dict(model=name, img_size=size, batch=batch, devices=jax.local_device_count(), dtype=dtype,
               steps_per_s=steps, images_per_s=steps * batch,
               mfu_matmul=3 * 2 * macs * steps * batch / matmul)  # backward ~ 2x forward
    if compare == "timm" and measure.timm_has(name):
      log("    timm (PyTorch, float32, torch.optim.AdamW) on the same shapes")
      row["timm_steps_per_s"] = train.timm_steps_per_second(name, batch, size, runs)
      row["vs_timm"] = steps / row["timm_steps_per_s"]
    if profile:
      log("    profiling the train step")
      row["profile"] = profile_lib.profile(run, hlo_text, devices=jax.local_device_count())
    rows.append(row)
  return rows


def format_table(rows, columns=COLUMNS) -> str:
  """A markdown table of the rows' measured columns."""
  cols = [c for c in columns if any(c[0] in r for r in rows)]
  lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    lines.append("| " + " | ".join(c[2].format(r[c[0]]) if c[0] in r else "" for c in cols) + " |")
  return "\n".join(lines)
