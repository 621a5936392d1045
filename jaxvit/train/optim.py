"""Optimizers and learning-rate schedules from the config (optax)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("adamw", "sgd", "lamb")
SCHEDULES = ("cosine", "linear", "step", "constant")
# no weight decay on norms, biases, position embeddings (RoPE-Mixed's `freqs` too) and prefix tokens (DeiT / timm),
# nor on frozen parameters (T2T's Performer `random_features`), which decoupled decay would otherwise shrink
NO_DECAY = ("bias", "scale", "pos_embed", "cls_token", "dist_token", "reg_token", "gamma", "freqs",
            "random_features")


def schedule(cfg, total_steps: int):
  """Linear warm-up from `cfg.warmup_init_lr` to `cfg.lr`, then `cosine` / `linear` decay to `cfg.min_lr`, `step` decay or `constant`."""
  kind, warmup = cfg.get("schedule", "cosine"), int(cfg.get("warmup_steps", 0))
  lr, min_lr = float(cfg.lr), float(cfg.get("min_lr", 0.0))
  decay_steps = max(total_steps - warmup, 1)
  if kind == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=min_lr / lr if lr else 0.0)
  elif kind == "linear":
    decay = optax.linear_schedule(lr, min_lr, decay_steps)
  elif kind == "step":
    every = int(cfg.get("step_every", decay_steps // 3 or 1))
    decay = optax.exponential_decay(lr, every, float(cfg.get("step_factor", 0.1)), staircase=True)
  elif kind == "constant":
    decay = optax.constant_schedule(lr)
  else:
    raise ValueError(f"config.optimizer.schedule={kind!r}; accepted: {SCHEDULES}")
  if not warmup:
    return decay
  warmup_from = float(cfg.get("warmup_init_lr", 0.0))
  return optax.join_schedules([optax.linear_schedule(warmup_from, lr, warmup), decay], [warmup])


def decay_mask(params):
  """True for parameters that get weight decay: kernels, not norms / biases / embeddings / tokens."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: k[-1] not in NO_DECAY for k in flat})


def make_optimizer(cfg, total_steps: int, depth: int | None = None):
  """`(optax transformation, schedule)` for `cfg.name` in OPTIMIZERS, with clipping and accumulation.

  With `grad_accum = k`, gradients of k steps are averaged per update and the schedule counts updates.
  `layer_decay < 1` scales each ViT layer's updates (fine-tuning; needs the model's `depth`);
  `lr_multipliers` scales the updates of parameter groups (`multipliers_for`); `freeze_steps` (same keys)
  holds a group still for its first updates (`freeze_until`).
  """
  accum = int(cfg.get("grad_accum", 1))
  lr = schedule(cfg, total_steps // accum)
  name, wd = cfg.get("name", "adamw"), float(cfg.get("weight_decay", 0.0))
  if name == "adamw":
    tx = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8),
                     weight_decay=wd, mask=decay_mask)
  elif name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                     optax.sgd(lr, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False)))
  elif name == "lamb":
    tx = optax.lamb(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), weight_decay=wd, mask=decay_mask)
  else:
    raise ValueError(f"config.optimizer.name={name!r}; accepted: {OPTIMIZERS}")
  if cfg.get("lr_multipliers"):
    tx = optax.chain(tx, scale_by_multipliers(dict(cfg.lr_multipliers)))
  if cfg.get("freeze_steps"):
    tx = optax.chain(tx, freeze_until(dict(cfg.freeze_steps)))
  if cfg.get("layer_decay", 1.0) < 1.0:
    if not depth:
      raise ValueError("config.optimizer.layer_decay needs a model with a `depth` (a ViT block stack)")
    tx = optax.chain(tx, scale_by_layer_decay(depth, float(cfg.layer_decay)))
  if cfg.get("clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(float(cfg.clip_norm)), tx)
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx, lr


def layer_of(path: tuple, depth: int) -> int:
  """BEiT / timm layer id of a ViT parameter: 0 for embeddings and tokens, i + 1 for block i,
  depth + 1 for the final norm and heads."""
  for part in path:
    if part.startswith("blocks_") and part[7:].isdigit():
      return int(part[7:]) + 1
  return 0 if path[0] in ("patch_embed", "pos_embed", "tokens") else depth + 1


def layer_decay_scales(params, depth: int, decay: float):
  """Per-parameter learning-rate scales decay^(depth + 1 - layer) (Bao et al. 2021, BEiT, sec. 2.5).
  A scanned stack (`blocks`, leading layer axis) gets one scale per layer."""
  def scale(path, leaf):
    names = tuple(getattr(k, "key", str(k)) for k in path)
    if "blocks" in names:  # scan layout: [depth, ...]
      per_layer = decay ** (depth - np.arange(depth, dtype=np.float32))
      return per_layer.reshape((depth,) + (1,) * (np.ndim(leaf) - 1))
    return np.float32(decay ** (depth + 1 - layer_of(names, depth)))
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by(scales_fn) -> optax.GradientTransformation:
  """Multiplies each update by `scales_fn(updates)`'s entry (learning rate and AdamW's decoupled weight
  decay shrink together, as timm's and PyTorch's per-group learning-rate scales do)."""
  def init(params):
    return optax.EmptyState()

  def update(updates, state, params=None):
    return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, scales_fn(updates)), state
  return optax.GradientTransformation(init, update)


def scale_by_layer_decay(depth: int, decay: float) -> optax.GradientTransformation:
  """Each ViT layer's updates times its `layer_decay_scales` entry."""
  return scale_by(lambda updates: layer_decay_scales(updates, depth, decay))


def multipliers_for(params, multipliers: dict):
  """Per-parameter scales from `{path substring: multiplier, "default": multiplier}`: the longest substring
  found in a parameter's "/"-joined path wins (DynamicViT: `{"score_predictor": 1.0, "default": 0.01}`
  trains the predictors at the full rate and the pretrained backbone at 1 / 100)."""
  default = float(multipliers.get("default", 1.0))
  def scale(path, leaf):
    name = "/".join(getattr(k, "key", str(k)) for k in path)
    found = [key for key in multipliers if key != "default" and key in name]
    return np.float32(multipliers[max(found, key=len)] if found else default)
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_multipliers(multipliers: dict) -> optax.GradientTransformation:
  """Each parameter group's updates times its multiplier (`multipliers_for`)."""
  return scale_by(lambda updates: multipliers_for(updates, multipliers))


def freeze_until(steps: dict) -> optax.GradientTransformation:
  """Zero updates for each parameter group until its update count in `steps` (`{path substring: steps,
  "default": steps}`, as `multipliers_for`; unnamed groups default to 0). DynamicViT's `fix_step`: the
  backbone's learning rate is 0 for the first 5 epochs (`engine.py`), while Adam's moments keep accumulating,
  as PyTorch's do at lr 0."""
  steps = {"default": 0, **steps}

  def init(params):
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    until = multipliers_for(updates, steps)
    updates = jax.tree.map(lambda u, t: jnp.where(state.count >= t, u, jnp.zeros_like(u)), updates, until)
    return updates, optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count))
  return optax.GradientTransformation(init, update)
