"""A frozen teacher: a registry model with weights from a converted timm checkpoint or a jaxvit run.

The teacher runs inside the student's jitted train step on the same augmented (mixed) batch, its
parameters sharded over the same mesh by their logical axis names and never updated. A CNN teacher
(DeiT's RegNetY-16GF) brings its BatchNorm running statistics (`batch_stats`, replicated) and runs
them in eval mode.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.registry import create_model, pretrained_cfg
from jaxvit.train import init_from


class Teacher(NamedTuple):
  model: Any
  variables: Any  # {"params": ...} (+ "batch_stats" for BatchNorm models), sharded over the mesh
  shardings: Any
  renormalize: Any  # images normalised for the student -> normalised for the teacher

  def outputs(self, variables, images):
    """`(logits, out)` of the frozen teacher on the student's (normalised) images."""
    return self.model.apply(variables, self.renormalize(images), train=False)


def _renormalizer(student: str, teacher: str):
  """The student's batch is normalised with its own mean / std; the teacher may expect others."""
  s, t = pretrained_cfg(student), pretrained_cfg(teacher)
  if s["mean"] == t["mean"] and s["std"] == t["std"]:
    return lambda images: images
  scale = jnp.asarray(s["std"]) / jnp.asarray(t["std"])
  shift = (jnp.asarray(s["mean"]) - jnp.asarray(t["mean"])) / jnp.asarray(t["std"])
  return lambda images: images * scale + shift


def load_teacher(cfg, student_name: str, num_classes: int, image_shape, mesh, rules, extra: dict | None = None
                 ) -> Teacher:
  """`cfg` is `config.distill.teacher`: `name`, `init_from` and optional `overrides` (plus `extra`).

  The teacher runs at the student's input size: a ViT's position embeddings are resampled if its
  weights are for another resolution (as `config.init_from` does), a CNN takes any size; a
  classifier for other classes is an error, since a re-initialised head would teach nothing.
  """
  for field in ("name", "init_from"):
    if not cfg.get(field):
      raise ValueError(f"config.distill.teacher.{field} is required (teacher = a registry model + its weights)")
  overrides = dict(cfg.get("overrides") or {}) | dict(extra or {})
  overrides.setdefault("num_classes", num_classes)
  model = create_model(cfg.name, **overrides)
  if hasattr(model, "img_size") and "img_size" not in overrides:
    model = model.clone(img_size=tuple(image_shape[:2]))
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False))
  source = init_from.load_variables(cfg.init_from, field="config.distill.teacher.init_from")
  variables, notes = init_from.adapt_variables(source, nn.meta.unbox(boxed), model, error_prefix=(
      f"config.distill.teacher.init_from={cfg.init_from!r} does not fit config.distill.teacher {cfg.name!r}"))
  replaced = [n for n in notes if " replaced " in n]
  if replaced:
    raise ValueError(f"config.distill.teacher.init_from={cfg.init_from!r} does not predict the student's "
                     f"{num_classes} classes: {'; '.join(replaced)}")
  # params by their logical axis names; batch_stats carry none, so they are replicated
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  variables = jax.device_put(variables, shardings)
  return Teacher(model, variables, shardings, _renormalizer(student_name, cfg.name))
