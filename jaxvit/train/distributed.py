"""Multi-process start-up: `jax.distributed.initialize` from flags or the cluster's environment."""

import os

import jax
import numpy as np


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
  """Joins a multi-process JAX job.

  With `coordinator_address` (`host:port`), `num_processes` and `process_id` the job is set up
  explicitly (local runs; CPU processes talk through gloo collectives). With `auto`, JAX reads the
  cluster from its environment (TPU pods, SLURM, Open MPI). Otherwise this is a single process.
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif auto or os.environ.get("JAXVIT_DISTRIBUTED") == "auto":
    jax.distributed.initialize()


def define_flags(flags):
  """The multi-process flags every jaxvit CLI takes (`launch/local.sh` passes the first three)."""
  flags.DEFINE_string("coordinator_address", None, "multi-process: host:port of process 0 (launch/local.sh)")
  flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
  flags.DEFINE_integer("process_id", None, "multi-process: this process's index")
  flags.DEFINE_bool("distributed", False, "multi-process: read the cluster from the environment (TPU pod, SLURM)")


def initialize_from_flags(values) -> None:
  """`initialize` from the flags `define_flags` defined."""
  initialize(values.coordinator_address, values.num_processes, values.process_id, values.distributed)


def any_process(flag: bool) -> bool:
  """True when `flag` is set on any process (all processes must call this at the same point)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.array(flag))))
