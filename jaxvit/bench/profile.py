"""Where a jitted step's time goes on CPU: a `jax.profiler` trace, summed per HLO op.

XLA names each executed thunk after its HLO instruction; the compiled HLO text maps instruction
names to the JAX op that produced them (`metadata={op_name=...}`). Summing the trace's durations
by that op name (block numbers folded, `blocks_3` -> `blocks_i`) gives a per-step, per-device
breakdown: which matmuls, which elementwise fusions, which transposes.
"""

import collections
import glob
import gzip
import json
import re
import tempfile

import jax

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+)[^\n]*?op_name=\"([^\"]*)\"", re.M)


def op_names(hlo_text: str) -> dict:
  """HLO instruction name -> (shape, JAX op name with block numbers folded). An instruction XLA
  combined from many ops (the gradient all-reduce) is named by its HLO opcode and op count."""
  out = {}
  for m in _INSTRUCTION.finditer(hlo_text):
    instruction, shape, op = m.groups()
    op = re.sub(r"blocks_\d+", "blocks_i", op).replace("jit(step)/", "")
    if ":" in op:
      opcode = re.sub(r"[.]\d+$", "", instruction)
      op = f"{opcode} of {op.count(':') + 1} ops"
    out[instruction] = ("tuple" if shape.startswith("(") else re.sub(r"\{[^}]*\}", "", shape), op)
  return out


def profile(run, hlo_text: str, steps: int = 2, devices: int = 1) -> list[dict]:
  """Runs `run()` `steps` times under the profiler; rows of `{op, shape, ms, calls}` per step and device,
  slowest first."""
  names = op_names(hlo_text)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(steps):
      run()
    jax.profiler.stop_trace()
    events = json.load(gzip.open(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]))["traceEvents"]
  total, calls = collections.Counter(), collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event["name"] in names:
      key = names[event["name"]][1], names[event["name"]][0]
      total[key] += event["dur"] / 1e3 / steps / devices
      calls[key] += 1
  return [dict(op=op, shape=shape, ms=ms, calls=calls[(op, shape)] // (steps * devices))
          for (op, shape), ms in total.most_common()]


def format_profile(rows, top: int = 25) -> str:
  total = sum(r["ms"] for r in rows)
  lines = [f"per step and device: {total:.1f} ms in XLA ops", "", "| ms | share | calls | op | shape |",
           "|---|---|---|---|---|"]
  for r in rows[:top]:
    lines.append(f"| {r['ms']:.1f} | {100 * r['ms'] / total:.1f}% | {r['calls']} | `{r['op']}` | `{r['shape']}` |")
  return "\n".join(lines)
