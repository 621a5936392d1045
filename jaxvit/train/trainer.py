"""`train_and_evaluate(config, workdir)`: the one training loop, built from small pieces."""

import inspect
import math
import os
import signal
import time
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from jaxvit.bench.flops import count_macs
from jaxvit.data import mixup, pipeline
from jaxvit.distill import objective
from jaxvit.dynamic import adavit, avit, evit, exits, idlevit, lgvit_distill
from jaxvit.registry import create_model, pretrained_cfg
from jaxvit.train import checkpoint, distributed, init_from, mesh as mesh_lib, optim, report, state as state_lib, step as step_lib
from jaxvit.utils import count_params, input_shape


class Preempted:
  """Turns SIGTERM into a flag the loop checks, so it can save a checkpoint and exit cleanly."""

  def __init__(self):
    self.flag = False
    self.previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.flag = True

  def restore(self):
    signal.signal(signal.SIGTERM, self.previous)


def build_model(config, num_classes: int):
  overrides = dict(config.model.get("overrides", {})) | objective.model_overrides(config)
  overrides.setdefault("num_classes", num_classes)
  return create_model(config.model.name, **overrides)


def total_steps(config, train_examples: int) -> int:
  if config.get("total_steps"):
    return int(config.total_steps)
  if config.get("total_epochs"):
    return int(math.ceil(config.total_epochs * train_examples / config.batch_size))
  raise ValueError("set config.total_steps or config.total_epochs")


def evaluate(eval_step, state, builder, config, mesh) -> dict:
  """Top-1 / top-5 / loss over every example of the eval split exactly once."""
  ds, _ = pipeline.eval_dataset(builder, config.data.eval_split, config.data.pp_eval,
                                batch_size=config.eval_batch_size // jax.process_count(),
                                process_index=jax.process_index(), process_count=jax.process_count(),
                                pp_defaults=pp_defaults(config))
  sums = None
  for batch in pipeline.as_numpy(ds):
    batch = pipeline.to_global(batch, mesh_lib.batch_sharding(mesh))
    out = eval_step(state, batch)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = jax.device_get(sums)
  count = float(sums["count"])
  result = {"top1": float(sums["top1"]) / count, "top5": float(sums["top5"]) / count,
            "loss": float(sums["loss"]) / count, "examples": int(count)}
  if "macs" in sums:  # an adaptive model (A-ViT, AdaViT): the MACs an image executed, on average
    result["gmacs"] = float(sums["macs"]) / count / 1e9
  return result


def pp_defaults(config) -> dict:
  """A bare `normalize` op uses the model's own mean / std (`jaxvit.pretrained_cfg`)."""
  cfg = pretrained_cfg(config.model.name)
  return {"normalize": dict(mean=cfg["mean"], std=cfg["std"])}


def check_config(config, mesh):
  devices_on_batch = mesh.shape["data"] * mesh.shape["fsdp"]
  for field in ("batch_size", "eval_batch_size"):
    value = config[field]
    if value % devices_on_batch or value % jax.process_count():
      raise ValueError(f"config.{field}={value} must be divisible by the {devices_on_batch} devices on the "
                       f"batch axes (config.mesh data x fsdp) and the {jax.process_count()} processes")


class Run(NamedTuple):
  """What training and evaluation share: mesh, data, model, optimizer and the (restored) state."""
  mesh: Any
  rules: tuple
  builder: Any
  model: Any
  tx: Any
  schedule: Any
  steps: int
  state: Any
  shardings: Any
  checkpoints: checkpoint.Checkpoints
  meta: dict | None
  distill: objective.Distillation


def model_phases(config, model) -> list:
  """`[(start step, model)]` from `config.model_schedule = ((start, overrides), ...)`: from step `start` (0-based,
  increasing) training runs `model.clone(**overrides)` (the overrides of earlier phases included), e.g. CF-ViT's
  informative selection switched on after 2/3 of the run. Overrides must keep the parameters' shapes; evaluation
  and checkpoints use `config.model`. Each phase is validated here, before any step."""
  phases, overrides, previous = [], {}, -1
  for entry in config.get("model_schedule") or ():
    if len(entry) != 2 or not hasattr(entry[1], "items") or int(entry[0]) <= previous:
      raise ValueError(f"config.model_schedule entry {entry!r}; accepted: (start step, dict of model overrides) "
                       f"with increasing start steps")
    previous, overrides = int(entry[0]), {**overrides, **dict(entry[1])}
    phased = model.clone(**overrides)
    if hasattr(phased, "validate"):
      phased.validate()
    phases.append((previous, phased))
  return phases


def base_loss(config, model):
  """Cross-entropy with label smoothing; for a multi-exit model, summed over its exits and final head
  (`config.exit_loss`: weights — one per exit then the final head, or "depth" —, distill_weight, temperature;
  jaxvit.dynamic.exits; `lgvit=dict(homo_weight, hete_weight)` adds LGViT's second-stage feature distillation,
  jaxvit.dynamic.lgvit_distill)."""
  loss = dynamic_loss(config, model, step_lib.classification_loss(config.get("label_smoothing", 0.0)))
  exit_loss = dict(config.get("exit_loss") or {})
  if not (getattr(model, "exits", None) or getattr(model, "has_exits", False)):
    if exit_loss:
      raise ValueError("config.exit_loss needs a model with exits (config.model.overrides.exits=dict(blocks=...))")
    return loss
  unknown = sorted(set(exit_loss) - {"weights", "distill_weight", "temperature", "lgvit"})
  if unknown:
    raise ValueError(f"config.exit_loss keys {unknown}; accepted: weights, distill_weight, temperature, lgvit")
  if exit_loss.get("weights") == "depth":
    exit_loss["weights"] = exits.depth_weights(model)
  lgvit = exit_loss.pop("lgvit", None)
  loss = exits.multi_exit_loss(loss, **exit_loss)
  return loss if lgvit is None else lgvit_distill.feature_loss(loss, model, lgvit)


# `config.dynamic_loss` kind -> the loss it adds, then every function whose keyword arguments it takes
DYNAMIC_LOSSES = {"avit": (avit.act_loss,), "adavit": (adavit.usage_loss, adavit.usage_terms),
                  "idlevit": (idlevit.cut_loss,)}


def dynamic_loss(config, model, loss):
  """`loss` plus an adaptive model's own training terms, `config.dynamic_loss = dict(kind=..., **hyper)`: A-ViT's
  ponder loss and distributional prior (`kind="avit"`, jaxvit.dynamic.avit.act_loss), AdaViT's usage loss
  (`kind="adavit"`, jaxvit.dynamic.adavit.usage_loss), IdleViT's token cut loss (`kind="idlevit"` on a ViT with
  that reduction, jaxvit.dynamic.idlevit.cut_loss)."""
  cfg = dict(config.get("dynamic_loss") or {})
  if not cfg:
    return loss
  kind = cfg.pop("kind", None)
  if kind not in DYNAMIC_LOSSES:
    raise ValueError(f"config.dynamic_loss kind={kind!r}; accepted: {tuple(DYNAMIC_LOSSES)}")
  if kind not in (getattr(model, "DYNAMIC_LOSS", None), (getattr(model, "reduction", None) or {}).get("kind")):
    where = "config.model.overrides.reduction=dict(kind='idlevit')" if kind == "idlevit" else \
        f"jaxvit.list_models('{kind}_*')"
    raise ValueError(f"config.dynamic_loss kind={kind!r} needs a model that makes {kind}'s decisions "
                     f"({where}); {config.model.name} does not")
  accepted = [p.name for fn in DYNAMIC_LOSSES[kind] for p in inspect.signature(fn).parameters.values()
              if p.kind is p.KEYWORD_ONLY]
  unknown = sorted(set(cfg) - set(accepted))
  if unknown:
    raise ValueError(f"config.dynamic_loss has {unknown} for kind={kind!r}; accepted: {accepted}")
  return DYNAMIC_LOSSES[kind][0](loss, model, **cfg)


def setup(config, workdir: str) -> Run:
  """Builds everything from the config and restores the newest readable checkpoint in `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  mesh = mesh_lib.make_mesh(config.mesh)
  check_config(config, mesh)
  rules = tuple(tuple(r) for r in config.get("sharding_rules") or mesh_lib.DEFAULT_RULES)
  builder = prepared_builder(config.data)
  model = build_model(config, builder.info.features["label"].num_classes)
  steps = total_steps(config, pipeline.num_examples(builder, config.data.train_split))
  tx, schedule = optim.make_optimizer(config.optimizer, steps, getattr(model, "depth", None))
  distill = objective.from_config(config, model, mesh, rules, base_loss(config, model), steps)
  state, shardings = state_lib.create_state(model, tx, input_shape(model)[1:], config.seed, mesh, rules,
                                            ema=bool(config.get("ema_decay")), init_loss_params=distill.init_loss_params)
  ckpts = checkpoint.Checkpoints(workdir, keep=config.get("keep_checkpoints", 3),
                                 asynchronous=config.get("async_checkpoints", True))
  state, meta = ckpts.restore_latest(state, shardings)
  if meta is None and config.get("init_from"):
    state = start_from(state, shardings, model, config.init_from)
  return Run(mesh, rules, builder, model, tx, schedule, steps, state, shardings, ckpts, meta, distill)


def next_batch(batches, dataset: str):
  """The next input batch; an image that cannot be decoded is an error naming its file."""
  try:
    return next(batches)
  except tf.errors.InvalidArgumentError as err:
    bad = pipeline.undecodable_files(dataset)
    if bad:
      raise ValueError(f"config.data.name={dataset!r}: cannot decode image file(s) {bad}") from None
    raise ValueError(f"config.data.name={dataset!r}: input pipeline error: {err.message[:300]}") from None


def prepared_builder(data):
  """The dataset's builder; process 0 prepares it (e.g. `digits`) while the others wait."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      pipeline.get_builder(data.name, data.get("data_dir"))
    multihost_utils.sync_global_devices("jaxvit: dataset prepared")
  return pipeline.get_builder(data.name, data.get("data_dir"))


def start_from(state, shardings, model, path: str):
  """The fresh state with variables (params, EMA params, BatchNorm statistics) from `config.init_from`;
  parameters a token reduction adds (DynamicViT's predictors) keep their initialisation when the
  source lacks them."""
  flat = lambda tree: flax.traverse_util.flatten_dict(tree, sep="/")
  shapes = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  source = init_from.load_variables(path)
  params, current = flat(source["params"]), flat(state.params)
  added = [k for k in current if k not in params and k.startswith(getattr(model, "reduction_params", ()))]
  params.update({k: np.zeros(current[k].shape, current[k].dtype) for k in added})  # placeholders, see below
  source["params"] = flax.traverse_util.unflatten_dict(params, sep="/")
  variables, notes = init_from.adapt_variables(source, shapes({"params": state.params, **state.mutable}), model)
  if added:
    notes.append(f"{len(added)} parameters the reduction adds keep their initialisation "
                 f"({', '.join(sorted({k.split('/')[1] for k in added}))})")
  for note in notes:
    print(f"init_from: {note}")
  params = flat(jax.device_put(variables.pop("params"), shardings.params))
  params = flax.traverse_util.unflatten_dict({**params, **{k: current[k] for k in added}}, sep="/")
  mutable = jax.device_put(variables, shardings.mutable)
  return state.replace(params=params, mutable=mutable, ema_params=params if state.ema_params is not None else None)


def evaluate_checkpoint(config, workdir: str) -> dict:
  """Eval-only mode: the newest checkpoint in `workdir` on `config.data.eval_split`."""
  run = setup(config, workdir)
  run.checkpoints.close()
  if run.meta is None:
    raise ValueError(f"--eval_only: {workdir}/checkpoints holds no checkpoint")
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    eval_step = jax.jit(step_lib.make_eval_step(run.model, ema=bool(config.get("ema_decay"))))
    result = evaluate(eval_step, run.state, run.builder, config, run.mesh)
  result["step"] = int(jax.device_get(run.state.step))
  print(report.write_summary(workdir, result, "eval.json"), flush=True)
  return result


def train_batches(config, builder, position: int):
  """This process's training batches (numpy) from example `position` of its data on."""
  ds = pipeline.train_dataset(builder, config.data.train_split, config.data.pp_train,
                              batch_size=config.batch_size // jax.process_count(), seed=config.seed, start=position,
                              shuffle_buffer=config.data.get("shuffle_buffer", 50_000),
                              repeated_aug=config.data.get("repeated_aug", 1),
                              num_shards=config.data.get("num_shards") or None,
                              process_index=jax.process_index(), process_count=jax.process_count(),
                              pp_defaults=pp_defaults(config))
  return iter(pipeline.as_numpy(ds))


def batch_transform(config, num_classes: int):
  """`transform(rng, batch) -> batch`: Mixup / CutMix from `config.mixup`, or None."""
  if not (config.get("mixup") and config.mixup.get("prob", 0.0) > 0):
    return None
  mix = dict(config.mixup)

  def transform(rng, batch):
    images, targets = mixup.mixup_cutmix(rng, batch["image"], batch["label"], num_classes, **mix)
    return dict(batch, image=images, label=targets)
  return transform


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config.model` on `config.data`, evaluating and checkpointing; returns the summary."""
  mesh, rules, builder, model, tx, schedule, steps, state, shardings, ckpts, meta, distill = setup(config, workdir)
  start = int(jax.device_get(state.step))
  position = meta["examples_seen"] if meta else 0
  if meta:
    print(f"resuming from step {start} ({workdir})")

  per_process = config.batch_size // jax.process_count()
  batches = train_batches(config, builder, position)
  transform = batch_transform(config, model.num_classes)
  batch_sharding = mesh_lib.batch_sharding(mesh)
  def jit_train_step(model):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jax.jit(step_lib.make_train_step(model, tx, distill.loss_fn, schedule, config.get("ema_decay"),
                                              transform, distill.teacher_fn),
                     in_shardings=(shardings, batch_sharding, *distill.teacher_shardings),
                     out_shardings=(shardings, None),
                     donate_argnums=0)

  warmup = config.get("keep_rate_warmup")
  if warmup:
    evit.warmup_model(model, warmup, 0)  # a bad warm-up config fails before any step
  phases = model_phases(config, model)
  train_steps = {}  # one compiled step per model phase and snapped EViT keep rate

  def train_step_at(step):
    phase = sum(start <= step - 1 for start, _ in phases) - 1
    stepped = phases[phase][1] if phase >= 0 else model
    stepped, rate = evit.warmup_model(stepped, warmup, step - 1) if warmup else (stepped, None)
    if (phase, rate) not in train_steps:
      if jax.process_index() == 0 and phase >= 0 and all(p != phase for p, _ in train_steps):
        print(f"model schedule: {dict(config.model_schedule[phase][1])} from step {step}", flush=True)
      if rate is not None and jax.process_index() == 0:
        print(f"keep-rate warm-up: keep_rate {rate:.4g} from step {step}", flush=True)
      train_steps[phase, rate] = jit_train_step(stepped)
    return train_steps[phase, rate]

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    eval_step = jax.jit(step_lib.make_eval_step(model, ema=bool(config.get("ema_decay"))))

  writer = report.make_writer(workdir)
  progress = report.Progress(steps, start)
  preempted = Preempted()
  history, best, last_eval, started = [], 0.0, None, time.time()

  def save(step):
    ckpts.save(step, state, {"step": step, "examples_seen": position})

  try:
    for step in range(start + 1, steps + 1):
      batch = next_batch(batches, config.data.name)
      if distill.saved_logits is not None:
        batch["teacher_logits"] = distill.saved_logits.log_probs(step - 1)
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, metrics = train_step_at(step)(state, pipeline.to_global(batch, batch_sharding), *distill.teacher_args)
      position += per_process
      history.append(metrics)
      stop = distributed.any_process(preempted.flag)  # read once (a signal may land any time), agreed by all
      save_now = step % config.checkpoint_every == 0 or step == steps or stop
      if step % config.log_every == 0 or save_now:  # a checkpoint is only written after a finite loss
        means = report.mean_metrics(history)
        history = []
        if not np.isfinite(means["loss"]):
          raise FloatingPointError(f"loss is {means['loss']} at step {step}; stopping. The last good checkpoint "
                                   f"in {workdir}/checkpoints is kept (lower config.optimizer.lr?)")
        writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
        if jax.process_index() == 0:
          print(progress.line(step, means), flush=True)
      if step % config.eval_every == 0 or step == steps:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
          last_eval = evaluate(eval_step, state, builder, config, mesh)
        best = max(best, last_eval["top1"])
        writer.write_scalars(step, {f"eval/{k}": v for k, v in last_eval.items()})
        if jax.process_index() == 0:
          executed = f" | GMACs executed {last_eval['gmacs']:.5f}" if "gmacs" in last_eval else ""
          print(f"eval at step {step}: top-1 {last_eval['top1']:.4f} | top-5 {last_eval['top5']:.4f} | "
                f"loss {last_eval['loss']:.4f}{executed} ({last_eval['examples']} examples)", flush=True)
      if save_now:
        save(step)
      if stop:
        print(f"SIGTERM: saved a checkpoint at step {step}; exiting", flush=True)
        break
  finally:
    ckpts.close()
    writer.flush()
    preempted.restore()

  images = jax.ShapeDtypeStruct(input_shape(model), jnp.float32)
  summary = {
      "model": config.model.name, "dataset": config.data.name, "steps": int(jax.device_get(state.step)),
      "params_m": count_params(state.params) / 1e6,
      "gmacs": count_macs(model.clone(**({"scan": False} if hasattr(model, "scan") else {})),
                          jax.eval_shape(lambda: state.variables()), images)["total"] / 1e9,
      "final_top1": last_eval["top1"] if last_eval else None, "best_top1": best,
      "final_top5": last_eval["top5"] if last_eval else None,
      **({"eval_gmacs": last_eval["gmacs"]} if last_eval and "gmacs" in last_eval else {}),  # executed, adaptive
      "train_seconds": round(time.time() - started, 1), "preempted": preempted.flag,
  }
  print(report.write_summary(workdir, summary, "summary.json"), flush=True)
  return summary
