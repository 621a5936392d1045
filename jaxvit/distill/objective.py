"""`config.distill` -> the train step's loss: base_weight * classification loss + weight * response
distillation + feature.weight * feature distillation.

A DeiT student with a distillation token trains its class head on the labels and its distillation
head on the teacher (`out["logits_cls"]`, `out["logits_dist"]`); any other student uses its logits
for both. The teacher's outputs arrive in the batch (`batch["teacher_logits"]`,
`batch["teacher_features"]`, computed in the same step on the same augmented images). Objectives
with parameters of their own (`jaxvit.distill.learned`) read them from the state's `loss_params`.
"""

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxvit.distill import feature, learned as learned_lib, response
from jaxvit.utils import input_shape

LOSSES = {
    "kd": response.kd,
    "deit_soft": response.deit_soft,
    "deit_hard": response.deit_hard,
    "dkd": response.dkd,
    "nkd": response.nkd,
    "uskd": response.uskd,
    "ctkd": response.ctkd,
    "logit_standardization": response.logit_standardization,
    "normkd": response.normkd,
    "wttm": response.wttm,
    "tf_kd": response.tf_kd,
    "function_matching": response.function_matching,
    "ofa": response.ofa,
}

# (base_weight, weight) of the official recipes: mdistiller KD (CE 0.1, KD 0.9), DeiT (alpha 0.5), DKD /
# NKD / USKD / NormKD (CE 1 + the loss), CTKD (CE 0.1, KD 0.9), logit standardisation (CE 0.1, KD 9), WTTM
# (CE 1 + 45 x WTTM, its CIFAR setting), Tf-KD (alpha 0.95 over CE), function matching (no CE: the label is
# only logged), OFA (CE 1 + 1).
DEFAULT_WEIGHTS = {
    "kd": (0.1, 0.9), "deit_soft": (0.5, 0.5), "deit_hard": (0.5, 0.5), "dkd": (1.0, 1.0), "nkd": (1.0, 1.0),
    "uskd": (1.0, 1.0), "ctkd": (0.1, 0.9), "logit_standardization": (0.1, 9.0), "normkd": (1.0, 1.0),
    "wttm": (1.0, 45.0), "tf_kd": (0.05, 0.95), "function_matching": (0.0, 1.0), "ofa": (1.0, 1.0),
}
TEACHER_FREE = ("tf_kd", "uskd")
SCHEDULES = {"ctkd": response.ctkd_lambda}  # hyper-parameters of a kind's schedule, besides its loss's
INTERNAL = ("rng", "theta", "grl_lambda", "weak_logits")  # loss arguments the objective supplies


class FeatureKind(NamedTuple):
  """A feature objective: its loss (for the accepted hyper-parameters), the `out` intermediates it reads
  from both models at each paired block, other teacher intermediates, and whether teacher blocks pair up."""
  fn: Callable
  keys: tuple = ("block",)
  teacher_keys: tuple = ()
  paired: bool = True


FEATURES = {
    "manifold": FeatureKind(feature.manifold),
    "attention_map": FeatureKind(feature.attention_map, ("attn",)),
    "tinymim": FeatureKind(feature.tinymim, ("attn", "values")),
    "fitnet": FeatureKind(feature.fitnet),
    "vitkd": FeatureKind(feature.vitkd, teacher_keys=("encoded",)),
    "ofa": FeatureKind(response.ofa, (), paired=False),  # OFA-KD's stage branches, against the teacher's logits
    # DynamicViT's ratio and token-distillation terms: the student's keep decisions at its pruning blocks
    "dynamicvit": FeatureKind(feature.dynamicvit, (), ("encoded",), paired=False),
}
FEATURE_WEIGHTS = {"fitnet": 100.0}  # mdistiller FITNET.LOSS.FEAT_WEIGHT; the others' official weight is 1
# ViTKD mimics blocks 0 and 1; OFA-KD's four stages of a 12-block ViT end at blocks 1, 3, 9 and 11
DEFAULT_LAYERS = {"vitkd": ((0, 1), (0, 1)), "ofa": ((1, 3, 9, 11), ()), "dynamicvit": ((3, 6, 9), ())}


def model_overrides(config) -> dict:
  """What the student (and teacher) must be built with for `config.distill.feature`."""
  kind = config.get("distill", {}).get("feature", {}).get("kind")
  if not kind:
    return {}
  check(config.distill)
  return {"return_attention": True} if "attn" in FEATURES[kind].keys else {}


def feature_pairs(cfg, student_depth: int, teacher_depth: int | None) -> list[tuple[int, int | None]]:
  """`config.distill.feature.student_layers` / `teacher_layers` -> block index pairs (negative: from the end);
  the teacher index is None for an objective that reads no teacher blocks (OFA-KD)."""
  kind = FEATURES[cfg.kind]
  s, t = list(cfg.get("student_layers") or ()), list(cfg.get("teacher_layers") or ())
  if not s and not t and cfg.kind in DEFAULT_LAYERS:
    s, t = map(list, DEFAULT_LAYERS[cfg.kind])
  if not kind.paired:
    if not s or t or (cfg.kind == "ofa" and len(s) > 4):
      raise ValueError(f"config.distill.feature.kind={cfg.kind!r} takes student_layers only (OFA-KD: up to 4 "
                       f"stage ends), got student_layers={s}, teacher_layers={t}")
    t = [None] * len(s)
  elif not s or len(s) != len(t):
    raise ValueError(f"config.distill.feature.student_layers={s} and teacher_layers={t} must pair up one to one")
  for field, layers, depth in (("student_layers", s, student_depth), ("teacher_layers", t, teacher_depth)):
    if any(i is not None and not -depth <= i < depth for i in layers):
      raise ValueError(f"config.distill.feature.{field}={layers}: blocks are 0..{depth - 1} (or negative)")
  return [(i % student_depth, None if j is None else j % teacher_depth) for i, j in zip(s, t)]


def check(cfg):
  """One error naming the field for an unknown kind or hyper-parameter."""
  feature_kind = cfg.get("feature", {}).get("kind")
  if feature_kind and feature_kind not in FEATURES:
    raise ValueError(f"config.distill.feature.kind={feature_kind!r}; accepted: {tuple(FEATURES)}")
  if feature_kind:
    _check_hyper("config.distill.feature.hyper", cfg.feature.get("hyper"), [FEATURES[feature_kind].fn], feature_kind)
  if not cfg.get("kind") and feature_kind:
    return
  if cfg.get("kind") not in LOSSES:
    raise ValueError(f"config.distill.kind={cfg.get('kind')!r}; accepted: {tuple(LOSSES)}")
  hyper = dict(cfg.get("hyper") or {})
  fns = [LOSSES[cfg.kind]] + ([SCHEDULES[cfg.kind]] if cfg.kind in SCHEDULES else [])
  if cfg.kind == "logit_standardization":  # passes the rest on to its base loss
    fns.append(LOSSES.get(hyper.get("base", "kd"), response.kd))
  _check_hyper("config.distill.hyper", hyper, fns, cfg.kind)


def _keyword_names(fn) -> list[str]:
  return [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]


def _check_hyper(field: str, hyper, fns, kind: str):
  accepted = list(dict.fromkeys(n for fn in fns for n in _keyword_names(fn) if n not in INTERNAL))
  unknown = sorted(set(hyper or {}) - set(accepted))
  if unknown:
    raise ValueError(f"{field} has {unknown} for kind={kind!r}; accepted: {accepted}")


def distillation_loss(cfg, base_loss: Callable, pairs: list = (), learned=None) -> Callable:
  """`loss_fn(logits, out, batch, loss_params) -> (loss, metrics)` for the trainer, from a `config.distill`
  that passed `check`; `learned` is the objective's `jaxvit.distill.learned.Learned` module, if any."""
  kind, hyper = cfg.get("kind"), dict(cfg.get("hyper") or {})
  schedule_names = _keyword_names(SCHEDULES[kind]) if kind in SCHEDULES else []
  loss_hyper = {k: v for k, v in hyper.items() if k not in schedule_names}
  base_weight, weight = DEFAULT_WEIGHTS.get(kind, (1.0, 0.0))
  base_weight = base_weight if cfg.get("base_weight") is None else cfg.base_weight
  weight = weight if cfg.get("weight") is None else cfg.weight
  warmup = cfg.get("warmup_steps") or 0
  feature_cfg = cfg.get("feature") or {}
  feature_kind = FEATURES.get(feature_cfg.get("kind"))
  feature_weight = feature_cfg.get("weight")
  feature_weight = FEATURE_WEIGHTS.get(feature_cfg.get("kind"), 1.0) if feature_weight is None else feature_weight
  feature_hyper = dict(feature_cfg.get("hyper") or {})

  def relation_loss(out, teacher_features, rng):
    if feature_kind.fn is feature.dynamicvit:  # the student's pruning stages against the teacher's final tokens
      return feature.dynamicvit([out[f"keep_decision{i}"] for i, _ in pairs], out["encoded"][:, 1:],
                                teacher_features["encoded"][:, 1:], **feature_hyper)
    terms = []
    for n, (i, j) in enumerate(pairs):
      student = [out[f"{key}{i}"] for key in feature_kind.keys]
      teacher = [teacher_features[f"{key}{j}"] for key in feature_kind.keys]
      extra = {"rng": jax.random.fold_in(rng, n)} if feature_kind.fn is feature.manifold else {}
      terms.append(feature_kind.fn(*student, *teacher, **extra, **feature_hyper))
    return sum(terms) / len(terms)

  def loss_fn(logits, out, batch, loss_params=None):
    cls_logits, dist_logits = out.get("logits_cls", logits), out.get("logits_dist", logits)
    base, metrics = base_loss(cls_logits, out, batch)
    metrics = dict(metrics, base_loss=base)
    inputs, learned_feature = ({}, None) if learned is None else learned.apply(
        {"params": loss_params}, out, batch, rngs={"mask": batch["loss_rng"]})
    ramp = jnp.minimum(batch["step"] / warmup, 1.0) if warmup else 1.0  # DKD's min(epoch / warm-up, 1)
    loss = base_weight * base
    if kind:
      metrics["distill_loss"] = LOSSES[kind](dist_logits, batch.get("teacher_logits"), batch["label"], **loss_hyper,
                                             **inputs)
      loss = loss + ramp * weight * metrics["distill_loss"]
    if "theta" in inputs:
      metrics["ctkd_temperature"] = response.ctkd_temperature(inputs["theta"], inputs["grl_lambda"], **{
          k: v for k, v in loss_hyper.items() if k in ("t_start", "t_end")})
    if feature_kind is not None:
      metrics["feature_loss"] = (learned_feature if learned_feature is not None
                                 else relation_loss(out, batch["teacher_features"], batch["loss_rng"]))
      loss = loss + ramp * feature_weight * metrics["feature_loss"]
    if "teacher_logits" in batch:
      metrics["teacher_agreement"] = jnp.mean(dist_logits.argmax(-1) == batch["teacher_logits"].argmax(-1))
    return loss, metrics
  return loss_fn


class Distillation(NamedTuple):
  """What the trainer needs: the loss; a teacher run in the step (`teacher_fn(variables, batch)`,
  `teacher_args`, `teacher_shardings`) or precomputed logits read per step (`saved_logits`); and
  `init_loss_params(rng)`, the objective's own parameters (None: it has none)."""
  loss_fn: Callable
  teacher_fn: Callable | None = None
  teacher_args: tuple = ()
  teacher_shardings: tuple = ()
  saved_logits: Any = None
  init_loss_params: Callable | None = None


def _describe(model) -> dict:
  """What `Learned` reads of a model (a CNN teacher has no token grid)."""
  fields = ("depth", "num_prefix_tokens", "grid", "num_classes")
  return {f: tuple(v) if f == "grid" else v for f in fields if (v := getattr(model, f, None)) is not None}


def _learned(cfg, model, teacher_model, pairs, total_steps: int, teacher_fn=None, teacher_variables=None):
  """The objective's `Learned` module and `init(rng) -> params`, or (None, None) without learned parts."""
  feature_kind = (cfg.get("feature") or {}).get("kind")
  if cfg.get("kind") not in learned_lib.LEARNED_KINDS and feature_kind not in learned_lib.LEARNED_FEATURES:
    return None, None
  module = learned_lib.Learned(
      cfg.get("kind") or None, feature_kind or None, tuple(pairs), _describe(model),
      _describe(teacher_model) if teacher_model is not None else {}, dict(cfg.get("hyper") or {}),
      dict(cfg.feature.get("hyper") or {}) if feature_kind else {}, total_steps)
  images = jax.ShapeDtypeStruct(input_shape(model), jnp.float32)
  out = jax.eval_shape(lambda x: model.apply(model.init(jax.random.key(0), x), x, train=False)[1], images)
  batch = {"image": images, "label": jax.ShapeDtypeStruct((1,), jnp.int32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
  if teacher_fn is not None:
    batch |= jax.eval_shape(teacher_fn, teacher_variables, batch)
  zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)

  def init(rng):
    return module.init({"params": rng, "mask": rng}, zeros(out), zeros(batch))["params"]
  return module, init


def from_config(config, model, mesh, rules, base_loss: Callable, total_steps: int = 1) -> Distillation:
  """The trainer's distillation setup; without `config.distill.kind` / `feature.kind`, the base loss alone."""
  cfg = config.get("distill")
  feature_kind = (cfg or {}).get("feature", {}).get("kind")
  if not cfg or not (cfg.get("kind") or feature_kind):
    return Distillation(base_loss)
  check(cfg)
  if cfg.get("kind") in TEACHER_FREE and not feature_kind:
    module, init = _learned(cfg, model, None, [], total_steps)
    return Distillation(distillation_loss(cfg, base_loss, learned=module), init_loss_params=init)
  if cfg.teacher.get("logits"):
    if feature_kind:
      raise ValueError("config.distill.feature needs the teacher's intermediates; saved logits "
                       "(config.distill.teacher.logits) hold only its predictions")
    from jaxvit.distill.sparse_logits import SparseLogits
    module, init = _learned(cfg, model, None, [], total_steps)
    return Distillation(distillation_loss(cfg, base_loss, learned=module),
                        saved_logits=SparseLogits(cfg.teacher.logits, config, model.num_classes),
                        init_loss_params=init)
  from jaxvit.distill.teacher import load_teacher
  teacher = load_teacher(cfg.teacher, config.model.name, model.num_classes, input_shape(model)[1:], mesh, rules,
                         model_overrides(config))
  kind = FEATURES.get(feature_kind)
  pairs = feature_pairs(cfg.feature, model.depth, getattr(teacher.model, "depth", None)) if kind else []
  keys = [f"{key}{j}" for _, j in pairs if j is not None for key in kind.keys] + list(kind.teacher_keys) if kind else []

  def teacher_fn(variables, batch):
    logits, out = teacher.outputs(variables, batch["image"])
    return {"teacher_logits": logits, "teacher_features": {key: out[key] for key in keys}}
  module, init = _learned(cfg, model, teacher.model, pairs, total_steps, teacher_fn, teacher.variables)
  return Distillation(distillation_loss(cfg, base_loss, pairs, module), teacher_fn, (teacher.variables,),
                      (teacher.shardings,), init_loss_params=init)
