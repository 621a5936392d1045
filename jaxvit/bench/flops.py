"""Counting a model's multiply-accumulates the way papers and timm do (fvcore's convention).

Papers' "FLOPs" and timm's GMACs count one multiply-add per weight use in matmuls and convolutions
(attention's QK^T and AV included; a convolution's output element costs kh * kw * C_in / groups, so
grouped and depthwise convolutions count their groups' channels only) plus fvcore's normalisation
cost (5 per element for an affine LayerNorm / GroupNorm, 2 for an inference BatchNorm), and nothing
for activations, softmax or residual adds. fvcore also counts one per input element of a CNN head's
global average pool: under 1e-4 GMACs for the CNNs here, below the published rounding, so not
counted. XLA's compiled cost analysis counts every elementwise flop too (an erf GELU is a long
polynomial), so DeiT-S is 4.74 "GMACs" there against the published 4.61; both are reported.
"""

import math

import flax.linen as nn
import jax
import jax.extend as jex
import numpy as np

_NORMS = {nn.LayerNorm: 5, nn.GroupNorm: 5, nn.RMSNorm: 3, nn.BatchNorm: 2}


def _dot_macs(eqn) -> int:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)


def _conv_macs(eqn) -> int:
  """Output elements x the kernel's size per output channel (its `[kh, kw, C_in / groups]`)."""
  rhs = eqn.invars[1].aval.shape
  out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
  return math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) // rhs[out_dim]


def jaxpr_macs(jaxpr) -> int:
  """Matmul + convolution MACs of a (closed) jaxpr, following calls, remat and scans (x length)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_macs(eqn)
    elif name == "conv_general_dilated":
      total += _conv_macs(eqn)
    elif name == "cond":
      total += max(jaxpr_macs(b) for b in eqn.params["branches"])
    else:
      times = eqn.params.get("length", 1) if name == "scan" else 1
      total += times * sum(jaxpr_macs(sub) for sub in jex.core.jaxprs_in_params(eqn.params))
  return total


def count_macs(model, variables, images, **apply_kwargs) -> dict:
  """`{"matmul": ..., "norm": ..., "total": ...}` MACs of one `model.apply` on `images`.

  Counted on the loop layout (a scanned model traces its block once, so it is unrolled here).
  """
  if getattr(model, "scan", False):
    raise ValueError("count_macs needs scan=False (the interceptor sees a scanned block once)")
  norm_macs = []

  def count_norms(next_fun, args, kwargs, context):
    per_element = _NORMS.get(type(context.module))
    if per_element and context.method_name == "__call__":
      use_running = kwargs.get("use_running_average", getattr(context.module, "use_running_average", None))
      per_element = 4 if (type(context.module) is nn.BatchNorm and not use_running) else per_element
      norm_macs.append(np.prod(args[0].shape) * per_element)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(count_norms):
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, **apply_kwargs))(variables, images)
  matmul = jaxpr_macs(jaxpr)
  norm = int(sum(norm_macs))
  return dict(matmul=matmul, norm=norm, total=matmul + norm)


def xla_cost(compiled) -> dict:
  """XLA's compiled cost analysis (`flops`, `transcendentals`, `bytes accessed`) as a plain dict."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {k: float(v) for k, v in (cost or {}).items() if k in ("flops", "transcendentals", "bytes accessed")}
