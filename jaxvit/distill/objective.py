"""`config.distill` -> the train step's loss: base_weight * classification loss + weight * distillation.

A DeiT student with a distillation token trains its class head on the labels and its distillation
head on the teacher (`out["logits_cls"]`, `out["logits_dist"]`); any other student uses its logits
for both. The teacher's logits arrive in the batch (`batch["teacher_logits"]`, computed in the same
step on the same augmented images).
"""

import inspect
from typing import Callable

import jax.numpy as jnp

from jaxvit.distill import response
from jaxvit.utils import input_shape

LOSSES = {
    "kd": response.kd,
    "deit_soft": response.deit_soft,
    "deit_hard": response.deit_hard,
    "dkd": response.dkd,
    "nkd": response.nkd,
    "logit_standardization": response.logit_standardization,
    "normkd": response.normkd,
    "wttm": response.wttm,
    "tf_kd": response.tf_kd,
    "function_matching": response.function_matching,
    "ofa": response.ofa,
}

# (base_weight, weight) of the official recipes: mdistiller KD (CE 0.1, KD 0.9), DeiT (alpha 0.5), DKD /
# NKD / NormKD (CE 1 + the loss), logit standardisation (CE 0.1, KD 9), WTTM (CE 1 + 45 x WTTM, its CIFAR
# setting), Tf-KD (alpha 0.95 over CE), function matching (no CE: the label is only logged), OFA (CE 1 + 1).
DEFAULT_WEIGHTS = {
    "kd": (0.1, 0.9), "deit_soft": (0.5, 0.5), "deit_hard": (0.5, 0.5), "dkd": (1.0, 1.0), "nkd": (1.0, 1.0),
    "logit_standardization": (0.1, 9.0), "normkd": (1.0, 1.0), "wttm": (1.0, 45.0), "tf_kd": (0.05, 0.95),
    "function_matching": (0.0, 1.0), "ofa": (1.0, 1.0),
}
TEACHER_FREE = ("tf_kd",)


def check(cfg):
  """One error naming the field for an unknown kind or hyper-parameter."""
  if cfg.get("kind") not in LOSSES:
    raise ValueError(f"config.distill.kind={cfg.get('kind')!r}; accepted: {tuple(LOSSES)}")
  fn = LOSSES[cfg.kind]
  accepted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
  varkw = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
  unknown = sorted(set(cfg.get("hyper") or {}) - set(accepted))
  if unknown and not varkw:
    raise ValueError(f"config.distill.hyper has {unknown} for kind={cfg.kind!r}; accepted: {accepted}")


def distillation_loss(cfg, base_loss: Callable) -> Callable:
  """`loss_fn(logits, out, batch) -> (loss, metrics)` for the trainer, from `config.distill`."""
  check(cfg)
  fn, hyper = LOSSES[cfg.kind], dict(cfg.get("hyper") or {})
  base_weight, weight = DEFAULT_WEIGHTS[cfg.kind]
  base_weight = base_weight if cfg.get("base_weight") is None else cfg.base_weight
  weight = weight if cfg.get("weight") is None else cfg.weight
  warmup = cfg.get("warmup_steps") or 0

  def loss_fn(logits, out, batch):
    cls_logits, dist_logits = out.get("logits_cls", logits), out.get("logits_dist", logits)
    base, metrics = base_loss(cls_logits, out, batch)
    distill = fn(dist_logits, batch.get("teacher_logits"), batch["label"], **hyper)
    ramp = jnp.minimum(batch["step"] / warmup, 1.0) if warmup else 1.0  # DKD's min(epoch / warm-up, 1)
    metrics = dict(metrics, base_loss=base, distill_loss=distill)
    if "teacher_logits" in batch:
      metrics["teacher_agreement"] = jnp.mean(dist_logits.argmax(-1) == batch["teacher_logits"].argmax(-1))
    return base_weight * base + ramp * weight * distill, metrics
  return loss_fn


def from_config(config, model, mesh, rules, base_loss: Callable):
  """`(loss_fn, teacher_fn, teacher_args, teacher_shardings)` for the trainer; without
  `config.distill.kind`, the base loss and no teacher."""
  cfg = config.get("distill")
  if not cfg or not cfg.get("kind"):
    return base_loss, None, (), ()
  from jaxvit.distill.teacher import load_teacher
  check(cfg)
  loss_fn = distillation_loss(cfg, base_loss)
  if cfg.kind in TEACHER_FREE:
    return loss_fn, None, (), ()
  teacher = load_teacher(cfg.teacher, config.model.name, model.num_classes, input_shape(model)[1:], mesh, rules)

  def teacher_fn(params, batch):
    logits, _ = teacher.model.apply({"params": params}, teacher.renormalize(batch["image"]), train=False)
    return {"teacher_logits": logits}
  return loss_fn, teacher_fn, (teacher.params,), (teacher.shardings,)
