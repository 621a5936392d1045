"""The device mesh and the logical-axis sharding rules, both from the config (DESIGN.md, Training)."""

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "model")

# logical name -> mesh axes. `batch` splits over data and fsdp; FSDP shards the `embed` dimension of
# parameters; tensor parallelism (`model`) shards heads and the MLP's hidden units.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "model"),
    ("mlp", "model"),
    ("kv", None), ("seq", None), ("classes", None), ("conv_in", None), ("layers", None),
)


def make_mesh(shape: dict, devices=None) -> jax.sharding.Mesh:
  """`dict(data=-1, fsdp=1, model=1)` -> a Mesh over all devices (-1 takes what is left)."""
  devices = devices if devices is not None else jax.devices()
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"config.mesh has unknown axes {unknown}; accepted: {MESH_AXES}")
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1 or len(devices) % fixed:
    raise ValueError(f"config.mesh={dict(shape)} does not fit {len(devices)} devices (at most one -1; "
                     f"the other sizes must divide the device count)")
  sizes = [len(devices) // fixed if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"config.mesh={dict(shape)} gives {int(np.prod(sizes))} devices, there are {len(devices)}")
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
