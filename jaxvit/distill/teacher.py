"""A frozen teacher: a registry model with weights from a converted timm checkpoint or a jaxvit run.

The teacher runs inside the student's jitted train step on the same augmented (mixed) batch, its
parameters sharded over the same mesh by their logical axis names and never updated.
"""

from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.registry import create_model, pretrained_cfg
from jaxvit.train.init_from import load_params
from jaxvit.utils import input_shape


class Teacher(NamedTuple):
  model: Any
  params: Any  # sharded over the mesh
  shardings: Any
  renormalize: Any  # images normalised for the student -> normalised for the teacher


def _renormalizer(student: str, teacher: str):
  """The student's batch is normalised with its own mean / std; the teacher may expect others."""
  s, t = pretrained_cfg(student), pretrained_cfg(teacher)
  if s["mean"] == t["mean"] and s["std"] == t["std"]:
    return lambda images: images
  scale = jnp.asarray(s["std"]) / jnp.asarray(t["std"])
  shift = (jnp.asarray(s["mean"]) - jnp.asarray(t["mean"])) / jnp.asarray(t["std"])
  return lambda images: images * scale + shift


def load_teacher(cfg, student_name: str, num_classes: int, image_shape, mesh, rules) -> Teacher:
  """`cfg` is `config.distill.teacher`: `name`, `init_from` and optional `overrides`."""
  for field in ("name", "init_from"):
    if not cfg.get(field):
      raise ValueError(f"config.distill.teacher.{field} is required (teacher = a registry model + its weights)")
  overrides = dict(cfg.get("overrides") or {})
  overrides.setdefault("num_classes", num_classes)
  model = create_model(cfg.name, **overrides)
  if tuple(input_shape(model)[1:]) != tuple(image_shape):
    raise ValueError(f"config.distill.teacher {cfg.name!r} takes {input_shape(model)[1:]} images, the student "
                     f"{tuple(image_shape)}; set config.distill.teacher.overrides.img_size")
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)),
                                            train=False)["params"])
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  want = flax.traverse_util.flatten_dict(nn.meta.unbox(boxed), sep="/")
  have = flax.traverse_util.flatten_dict(load_params(cfg.init_from), sep="/")
  bad = [f"{p} {np.shape(have[p])} != {tuple(w.shape)}" for p, w in want.items() if p in have
         and np.shape(have[p]) != tuple(w.shape)]
  missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if bad or missing or unexpected:
    raise ValueError(f"config.distill.teacher.init_from={cfg.init_from!r} does not fit {cfg.name!r} with "
                     f"{num_classes} classes: " + "; ".join(f"{title}: {', '.join(items[:8])}" for title, items in
                                                            (("mis-shaped", bad), ("missing", missing),
                                                             ("unexpected", unexpected)) if items))
  params = flax.traverse_util.unflatten_dict({p: np.asarray(have[p], w.dtype) for p, w in want.items()}, sep="/")
  params = jax.device_put(params, shardings)
  return Teacher(model, params, shardings, _renormalizer(student_name, cfg.name))
