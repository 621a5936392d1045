"""Precomputed sparse teacher logits (TinyViT, Wu et al. 2022, arXiv:2207.10666, sec. 3.1).

A large teacher is paid once: `save` runs it over every training batch of a student config, with
the exact augmentation (and Mixup / CutMix) the student will see, and stores the top-k softmax
probabilities as float16 values and int32 indices, per step and process. Training reads them back
by step: the pipeline is deterministic in (config.seed, example position) and the batch transform
in (config.seed, step), so replaying the config replays the augmentation; TinyViT stores a seed per
image for the same purpose (`microsoft/Cream` `TinyViT/save_logits.py`). The dense target fills the
other classes with (1 - sum top-k) / (C - k), as TinyViT does.
"""

import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.data import pipeline
from jaxvit.utils import input_shape

# the config fields that decide which images (and mixes) each step sees
REPLAYED = ("seed", "batch_size", "data.name", "data.train_split", "data.pp_train", "data.shuffle_buffer",
            "data.repeated_aug", "data.num_shards", "mixup", "model.name", "model.overrides")
META = "sparse_logits.json"


def _fingerprint(config) -> dict:
  out = {}
  for field in REPLAYED:
    value = config
    for part in field.split("."):
      value = value.get(part) if hasattr(value, "get") else None
    out[field] = value.to_dict() if hasattr(value, "to_dict") else value
  return json.loads(json.dumps(out))


def _files(directory: str, process: int) -> tuple[str, str]:
  return (os.path.join(directory, f"values.p{process}.npy"), os.path.join(directory, f"indices.p{process}.npy"))


def _local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in its local batch order."""
  shards = {s.index[0].start or 0: np.asarray(s.data) for s in x.addressable_shards}
  return np.concatenate([shards[k] for k in sorted(shards)])


def save(config, directory: str, topk: int) -> dict:
  """Runs `config.distill.teacher` over the first `total_steps` training batches of `config`."""
  from jaxvit.distill.teacher import load_teacher
  from jaxvit.train import mesh as mesh_lib, state as state_lib, step as step_lib, trainer
  mesh = mesh_lib.make_mesh(config.mesh)
  trainer.check_config(config, mesh)
  rules = tuple(tuple(r) for r in config.get("sharding_rules") or mesh_lib.DEFAULT_RULES)
  builder = trainer.prepared_builder(config.data)
  model = trainer.build_model(config, builder.info.features["label"].num_classes)
  if not 0 < topk <= model.num_classes:
    raise ValueError(f"--topk={topk} must be in [1, {model.num_classes}] (the number of classes)")
  steps = trainer.total_steps(config, pipeline.num_examples(builder, config.data.train_split))
  teacher = load_teacher(config.distill.teacher, config.model.name, model.num_classes,
                         input_shape(model)[1:], mesh, rules)
  transform = trainer.batch_transform(config, model.num_classes)
  base_rng = state_lib.initial_rng(config.seed)

  def top_k(variables, batch, step):
    if transform is not None:
      batch = transform(step_lib.transform_rng(base_rng, step), batch)
    logits, _ = teacher.outputs(variables, batch["image"])
    values, indices = jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32)), topk)
    return values.astype(jnp.float16), indices.astype(jnp.int32)

  batch_sharding = mesh_lib.batch_sharding(mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    top_k = jax.jit(top_k, in_shardings=(teacher.shardings, batch_sharding, None))
  os.makedirs(directory, exist_ok=True)
  local = config.batch_size // jax.process_count()
  values_path, indices_path = _files(directory, jax.process_index())
  values = np.lib.format.open_memmap(values_path + ".partial", "w+", np.float16, (steps, local, topk))
  indices = np.lib.format.open_memmap(indices_path + ".partial", "w+", np.int32, (steps, local, topk))
  batches, started = trainer.train_batches(config, builder, 0), time.time()
  for step in range(steps):
    batch = pipeline.to_global(trainer.next_batch(batches, config.data.name), batch_sharding)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      v, i = top_k(teacher.variables, batch, jnp.int32(step))
    values[step], indices[step] = _local_rows(v), _local_rows(i)
    if jax.process_index() == 0 and ((step + 1) % 100 == 0 or step + 1 == steps):
      rate = (step + 1) / (time.time() - started)
      print(f"save_logits: step {step + 1}/{steps} | {rate:.2f} steps/s | ETA {(steps - step - 1) / rate:.0f} s",
            flush=True)
  values.flush(), indices.flush()
  del values, indices
  os.replace(values_path + ".partial", values_path)
  os.replace(indices_path + ".partial", indices_path)
  meta = dict(config=_fingerprint(config), steps=steps, topk=topk, num_classes=model.num_classes,
              process_count=jax.process_count(), teacher=dict(config.distill.teacher.to_dict()))
  if jax.process_count() > 1:  # the metadata marks the directory complete: every process's files are in
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("jaxvit: sparse logits written")
  if jax.process_index() == 0:
    with open(os.path.join(directory, META), "w") as f:
      json.dump(meta, f, indent=1)
  return meta


class SparseLogits:
  """Reads `save`'s output back for a student config; one error names the first field that differs."""

  def __init__(self, directory: str, config, num_classes: int):
    path = os.path.join(directory, META)
    if not os.path.exists(path):
      raise ValueError(f"config.distill.teacher.logits={directory!r} holds no {META} "
                       f"(write it with python -m jaxvit.distill.save_logits)")
    with open(path) as f:
      meta = json.load(f)
    saved, now = meta["config"], _fingerprint(config)
    for field in REPLAYED:
      if saved.get(field) != now.get(field):
        raise ValueError(f"config.{field}={now.get(field)!r} differs from the saved logits' {saved.get(field)!r} "
                         f"({directory}): the student would not see the images the teacher saw")
    if meta["process_count"] != jax.process_count() or meta["num_classes"] != num_classes:
      raise ValueError(f"the saved logits are for {meta['process_count']} process(es) and {meta['num_classes']} "
                       f"classes; this run has {jax.process_count()} and {num_classes}")
    values_path, indices_path = _files(directory, jax.process_index())
    self.values = np.load(values_path, mmap_mode="r")
    self.indices = np.load(indices_path, mmap_mode="r")
    self.steps, self.num_classes, self.topk = meta["steps"], num_classes, meta["topk"]

  def log_probs(self, step: int) -> np.ndarray:
    """The teacher's log-probabilities `[local batch, C]` at 0-based `step` (used as its logits)."""
    if step >= self.steps:
      raise ValueError(f"the saved logits cover {self.steps} steps; this run asks for step {step + 1}")
    values = self.values[step].astype(np.float32)
    rest = (1.0 - values.sum(-1, keepdims=True)) / max(self.num_classes - self.topk, 1)
    dense = np.broadcast_to(np.maximum(rest, 1e-8), values.shape[:1] + (self.num_classes,)).copy()
    np.put_along_axis(dense, self.indices[step], values, axis=-1)
    return np.log(np.maximum(dense, 1e-8))
