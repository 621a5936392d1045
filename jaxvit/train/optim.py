"""Optimizers and learning-rate schedules from the config (optax)."""

import flax
import jax
import optax

OPTIMIZERS = ("adamw", "sgd", "lamb")
SCHEDULES = ("cosine", "linear", "step", "constant")
# no weight decay on norms, biases, position embeddings and prefix tokens (DeiT / timm convention)
NO_DECAY = ("bias", "scale", "pos_embed", "cls_token", "dist_token", "reg_token", "gamma")


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


def make_optimizer(cfg, total_steps: int):
  """`(optax transformation, schedule)` for `cfg.name` in OPTIMIZERS, with clipping and accumulation.

  With `grad_accum = k`, gradients of k steps are averaged per update and the schedule counts updates.
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
  if cfg.get("clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(float(cfg.clip_norm)), tx)
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx, lr
