"""XLA's cheapest compile for tests: their small configs are compile-bound, so optimisation level 0 without LLVM's
expensive passes gives the same numbers sooner (from slower code, which a 2-image batch does not notice)."""

import jax

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit_fast(f, *args):
  """`jax.jit(f)(*args)` compiled with `FAST_COMPILE`."""
  return jax.jit(f).lower(*args).compile(FAST_COMPILE)(*args)
