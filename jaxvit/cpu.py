"""Running well on CPU hosts: one XLA device per core.

XLA's CPU backend parallelises large matmuls across cores but runs most other fused ops (softmax,
GELU, LayerNorm, attention's batched dots) on one thread. Splitting the batch over one CPU device
per core keeps every core busy: DeiT-S inference went from 21.7 to 25.2 images/s on a 2-core host
(README, Benchmarks). Results do not change (data parallelism over the batch).
"""

import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def use_all_cores(cores: int | None = None) -> int:
  """Asks XLA for one CPU device per usable core (or `cores`); returns the device count requested.

  Must run before JAX initialises its backends (before the first array is created). Leaves an
  existing `--xla_force_host_platform_device_count` in `XLA_FLAGS` alone.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if DEVICE_COUNT_FLAG in flags:
    return int(flags.split(DEVICE_COUNT_FLAG + "=")[1].split()[0])
  cores = cores or len(os.sched_getaffinity(0))
  os.environ["XLA_FLAGS"] = f"{flags} {DEVICE_COUNT_FLAG}={cores}".strip()
  return cores
