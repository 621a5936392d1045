"""Timed measurements: images/s, latency, XLA memory, the machine's matmul peak, timm's speed."""

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def time_runs(fn: Callable[[], object], runs: int = 5, warmup: int = 1, min_seconds: float = 0.0) -> list[float]:
  """Seconds per call of `fn` (which must block until done) over `runs` calls after `warmup`.

  Keeps calling past `runs` until `min_seconds` have been spent, so fast calls are timed often.
  """
  for _ in range(warmup):
    fn()
  times, start = [], time.perf_counter()
  while len(times) < runs or time.perf_counter() - start < min_seconds:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def matmul_peak(n: int = 4096, runs: int = 5, dtype=jnp.float32) -> float:
  """Achieved FLOP/s of an `n x n x n` matmul through XLA on this machine (the MFU denominator)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(jnp.dot)
  times = time_runs(lambda: f(a, b).block_until_ready(), runs=runs)
  return 2 * n ** 3 / statistics.median(times)


def memory_bytes(compiled) -> dict:
  """Peak memory XLA plans for one call: arguments + outputs + temporaries - aliased (bytes)."""
  mem = compiled.memory_analysis()
  if mem is None:
    return {}
  args, out, temp = mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.temp_size_in_bytes
  return dict(peak=args + out + temp - mem.alias_size_in_bytes, arguments=args, temp=temp)


def timm_has(name: str) -> bool:
  """Whether timm registers `name` (models timm lacks are measured without a comparison)."""
  import timm
  return timm.is_model(name)


def timm_images_per_second(name: str, batch: int, img_size: int, runs: int = 5, threads: int = 0) -> float:
  """timm's eval-mode images/s on the same input shape (random weights, float32, NCHW)."""
  import timm
  import torch

  from jaxvit.convert import timm_kwargs
  if threads:
    torch.set_num_threads(threads)
  model = timm.create_model(name, pretrained=False, **timm_kwargs(name, img_size=img_size)).eval()
  x = torch.randn(batch, 3, img_size, img_size)
  with torch.inference_mode():
    times = time_runs(lambda: model(x), runs=runs, warmup=2)
  return batch / statistics.median(times)


def jax_images_per_second(apply: Callable, variables, images, runs: int = 5) -> tuple[float, list[float]]:
  """Median images/s of a jitted `apply(variables, images)` and the per-call seconds."""
  times = time_runs(lambda: jax.block_until_ready(apply(variables, images)), runs=runs, warmup=2)
  return images.shape[0] / statistics.median(times), times


def random_images(batch: int, shape, seed: int = 0):
  return jnp.asarray(np.random.RandomState(seed).standard_normal((batch,) + tuple(shape)), jnp.float32)


def flops_per_cycle(cpuinfo: str) -> int:
  """Float32 FLOP per cycle and core from `/proc/cpuinfo`: two FMA units of 16 lanes with AVX-512 (64), of 8 with
  AVX2+FMA (32). AMD's Zen 4 (family 25 with AVX-512) runs 512-bit FMAs on its two 256-bit units: 32."""
  flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "") + " "
  family = next((line.split(":")[1].strip() for line in cpuinfo.splitlines() if line.startswith("cpu family")), "")
  if " avx512f " in flags:
    return 32 if "AuthenticAMD" in cpuinfo and family == "25" else 64
  return 32 if " fma " in flags else 16


def nominal_cpu_peak() -> tuple[float, str]:
  """Nominal float32 peak FLOP/s of the CPU cores this process may use: cores x clock x `flops_per_cycle`. A label
  says where the figure came from. The clock is the one /proc/cpuinfo reports; a core boosting above it (a cloud
  VM reports its base clock) can measure above this peak."""
  import os
  cores = len(os.sched_getaffinity(0))
  try:
    info = open("/proc/cpuinfo").read()
  except OSError:
    return 0.0, "unknown"
  mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
  if not mhz:
    return 0.0, "unknown"
  per_cycle = flops_per_cycle(info)
  return cores * max(mhz) * 1e6 * per_cycle, f"{cores} cores x {max(mhz):.0f} MHz (cpuinfo) x {per_cycle} FLOP/cycle"
