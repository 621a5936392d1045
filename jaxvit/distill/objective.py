"""`config.distill` -> the train step's loss: base_weight * classification loss + weight * response
distillation + feature.weight * feature distillation (averaged over the paired layers).

A DeiT student with a distillation token trains its class head on the labels and its distillation
head on the teacher (`out["logits_cls"]`, `out["logits_dist"]`); any other student uses its logits
for both. The teacher's outputs arrive in the batch (`batch["teacher_logits"]`,
`batch["teacher_features"]`, computed in the same step on the same augmented images).
"""

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxvit.distill import feature, response
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

# feature objective -> (function, the `out` intermediates of each paired layer it reads)
FEATURES = {
    "manifold": (feature.manifold, ("block",)),
    "attention_map": (feature.attention_map, ("attn",)),
    "tinymim": (feature.tinymim, ("attn", "values")),
}


def model_overrides(config) -> dict:
  """What the student (and teacher) must be built with for `config.distill.feature`."""
  kind = config.get("distill", {}).get("feature", {}).get("kind")
  if not kind:
    return {}
  check(config.distill)
  return {"return_attention": True} if "attn" in FEATURES[kind][1] else {}


def feature_pairs(cfg, student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
  """`config.distill.feature.student_layers` / `teacher_layers` -> block index pairs (negative: from the end)."""
  s, t = list(cfg.get("student_layers") or ()), list(cfg.get("teacher_layers") or ())
  if not s or len(s) != len(t):
    raise ValueError(f"config.distill.feature.student_layers={s} and teacher_layers={t} must pair up one to one")
  for field, layers, depth in (("student_layers", s, student_depth), ("teacher_layers", t, teacher_depth)):
    if any(not -depth <= i < depth for i in layers):
      raise ValueError(f"config.distill.feature.{field}={layers}: blocks are 0..{depth - 1} (or negative)")
  return [(i % student_depth, j % teacher_depth) for i, j in zip(s, t)]


def check(cfg):
  """One error naming the field for an unknown kind or hyper-parameter."""
  feature_kind = cfg.get("feature", {}).get("kind")
  if feature_kind and feature_kind not in FEATURES:
    raise ValueError(f"config.distill.feature.kind={feature_kind!r}; accepted: {tuple(FEATURES)}")
  if feature_kind:
    _check_hyper("config.distill.feature.hyper", cfg.feature.get("hyper"), [FEATURES[feature_kind][0]], feature_kind)
  if not cfg.get("kind") and feature_kind:
    return
  if cfg.get("kind") not in LOSSES:
    raise ValueError(f"config.distill.kind={cfg.get('kind')!r}; accepted: {tuple(LOSSES)}")
  hyper = dict(cfg.get("hyper") or {})
  fns = [LOSSES[cfg.kind]]
  if cfg.kind == "logit_standardization":  # passes the rest on to its base loss
    fns.append(LOSSES.get(hyper.get("base", "kd"), response.kd))
  _check_hyper("config.distill.hyper", hyper, fns, cfg.kind)


def _check_hyper(field: str, hyper, fns, kind: str):
  accepted = list(dict.fromkeys(p.name for fn in fns for p in inspect.signature(fn).parameters.values()
                                if p.kind is p.KEYWORD_ONLY and p.name != "rng"))
  unknown = sorted(set(hyper or {}) - set(accepted))
  if unknown:
    raise ValueError(f"{field} has {unknown} for kind={kind!r}; accepted: {accepted}")


def distillation_loss(cfg, base_loss: Callable, pairs: list[tuple[int, int]] = ()) -> Callable:
  """`loss_fn(logits, out, batch) -> (loss, metrics)` for the trainer, from a `config.distill` that
  passed `check`."""
  kind, hyper = cfg.get("kind"), dict(cfg.get("hyper") or {})
  base_weight, weight = DEFAULT_WEIGHTS.get(kind, (1.0, 0.0))
  base_weight = base_weight if cfg.get("base_weight") is None else cfg.base_weight
  weight = weight if cfg.get("weight") is None else cfg.weight
  warmup = cfg.get("warmup_steps") or 0
  feature_cfg = cfg.get("feature") or {}
  feature_fn, feature_keys = FEATURES.get(feature_cfg.get("kind"), (None, ()))

  def feature_loss(out, teacher_features, step):
    terms = []
    for n, (i, j) in enumerate(pairs):
      student = [out[f"{key}{i}"] for key in feature_keys]
      teacher = [teacher_features[f"{key}{j}"] for key in feature_keys]
      extra = {"rng": jax.random.fold_in(jax.random.key(n), step)} if feature_fn is feature.manifold else {}
      terms.append(feature_fn(*student, *teacher, **extra, **dict(feature_cfg.get("hyper") or {})))
    return sum(terms) / len(terms)

  def loss_fn(logits, out, batch):
    cls_logits, dist_logits = out.get("logits_cls", logits), out.get("logits_dist", logits)
    base, metrics = base_loss(cls_logits, out, batch)
    metrics = dict(metrics, base_loss=base)
    ramp = jnp.minimum(batch["step"] / warmup, 1.0) if warmup else 1.0  # DKD's min(epoch / warm-up, 1)
    loss = base_weight * base
    if kind:
      metrics["distill_loss"] = LOSSES[kind](dist_logits, batch.get("teacher_logits"), batch["label"], **hyper)
      loss = loss + ramp * weight * metrics["distill_loss"]
    if feature_fn is not None:
      metrics["feature_loss"] = feature_loss(out, batch["teacher_features"], batch["step"])
      loss = loss + ramp * feature_cfg.get("weight", 1.0) * metrics["feature_loss"]
    if "teacher_logits" in batch:
      metrics["teacher_agreement"] = jnp.mean(dist_logits.argmax(-1) == batch["teacher_logits"].argmax(-1))
    return loss, metrics
  return loss_fn


class Distillation(NamedTuple):
  """What the trainer needs: the loss, and a teacher run in the step (`teacher_fn(params, batch)`,
  `teacher_args`, `teacher_shardings`) or precomputed logits read per step (`saved_logits`)."""
  loss_fn: Callable
  teacher_fn: Callable | None = None
  teacher_args: tuple = ()
  teacher_shardings: tuple = ()
  saved_logits: Any = None


def from_config(config, model, mesh, rules, base_loss: Callable) -> Distillation:
  """The trainer's distillation setup; without `config.distill.kind` / `feature.kind`, the base loss alone."""
  cfg = config.get("distill")
  feature_kind = (cfg or {}).get("feature", {}).get("kind")
  if not cfg or not (cfg.get("kind") or feature_kind):
    return Distillation(base_loss)
  check(cfg)
  if cfg.get("kind") in TEACHER_FREE and not feature_kind:
    return Distillation(distillation_loss(cfg, base_loss))
  if cfg.teacher.get("logits"):
    if feature_kind:
      raise ValueError("config.distill.feature needs the teacher's intermediates; saved logits "
                       "(config.distill.teacher.logits) hold only its predictions")
    from jaxvit.distill.sparse_logits import SparseLogits
    return Distillation(distillation_loss(cfg, base_loss),
                        saved_logits=SparseLogits(cfg.teacher.logits, config, model.num_classes))
  from jaxvit.distill.teacher import load_teacher
  teacher = load_teacher(cfg.teacher, config.model.name, model.num_classes, input_shape(model)[1:], mesh, rules,
                         model_overrides(config))
  pairs = feature_pairs(cfg.feature, model.depth, teacher.model.depth) if feature_kind else []
  keys = [f"{key}{j}" for _, j in pairs for key in FEATURES[feature_kind][1]] if feature_kind else []

  def teacher_fn(variables, batch):
    logits, out = teacher.outputs(variables, batch["image"])
    return {"teacher_logits": logits, "teacher_features": {key: out[key] for key in keys}}
  return Distillation(distillation_loss(cfg, base_loss, pairs), teacher_fn, (teacher.variables,), (teacher.shardings,))
