"""Train and eval steps. Losses plug in (`loss_fn`); the trainer never forks (DESIGN.md)."""

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def soft_cross_entropy(logits, targets):
  """Mean cross-entropy against soft targets `[B, C]` (one-hot, smoothed or mixed labels)."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1))


def classification_loss(label_smoothing: float = 0.0) -> Callable:
  """`loss_fn(logits, out, batch) -> (loss, metrics)`: cross-entropy with label smoothing (Szegedy et
  al. 2016, eq. in sec. 7: q' = (1 - eps) q + eps / K); `batch["label"]` may already be soft."""
  def loss_fn(logits, out, batch, loss_params=None):
    labels = batch["label"]
    targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, logits.shape[-1])
    targets = optax.smooth_labels(targets, label_smoothing) if label_smoothing else targets
    hard = labels.argmax(-1) if labels.ndim == 2 else labels
    return soft_cross_entropy(logits, targets), {"accuracy": jnp.mean(logits.argmax(-1) == hard)}
  return loss_fn


def transform_rng(state_rng, step):
  """The key the batch transform (Mixup / CutMix) uses at `step`; `jaxvit.distill.save_logits` replays it."""
  return jax.random.fold_in(jax.random.fold_in(state_rng, step), 99)


def make_train_step(model, tx, loss_fn: Callable, schedule: Callable, ema_decay: float | None = None,
                    batch_transform: Callable | None = None, teacher: Callable | None = None):
  """`step(state, batch[, teacher_variables]) -> (state, metrics)`; rngs are the state's key folded with the step.

  `batch_transform(rng, batch) -> batch` runs first (Mixup / CutMix); then `teacher(teacher_variables,
  batch) -> dict` adds a frozen teacher's outputs on those same images; `batch["step"]` (the step
  number, for losses that ramp up) and `batch["loss_rng"]` are added for the loss. `loss_fn(logits,
  out, batch, loss_params)` may have parameters of its own (`state.loss_params`): `tx` updates them
  separately from the model's (gradient clipping, if any, sees each group alone).
  """
  def step(state, batch, teacher_variables=None):
    rng = jax.random.fold_in(state.rng, state.step)
    if batch_transform is not None:
      batch = batch_transform(transform_rng(state.rng, state.step), batch)
    batch = dict(batch, step=state.step, loss_rng=jax.random.fold_in(rng, 3))
    if teacher is not None:
      batch.update(jax.lax.stop_gradient(teacher(teacher_variables, batch)))
    rngs = {name: jax.random.fold_in(rng, i) for i, name in enumerate(("dropout", "drop_path", "gumbel"))}
    mutable = list(state.mutable)

    def compute_loss(params, loss_params):
      (logits, out), new_mutable = model.apply({"params": params, **state.mutable}, batch["image"], train=True,
                                               rngs=rngs, mutable=mutable)
      loss, metrics = loss_fn(logits, out, batch, loss_params)
      return loss, (metrics, new_mutable)

    (loss, (metrics, new_mutable)), (grads, loss_grads) = jax.value_and_grad(compute_loss, (0, 1), has_aux=True)(
        state.params, state.loss_params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    loss_params, loss_opt_state = state.loss_params, state.loss_opt_state
    if loss_params is not None:
      loss_updates, loss_opt_state = tx.update(loss_grads, loss_opt_state, loss_params)
      loss_params = optax.apply_updates(loss_params, loss_updates)
    ema = state.ema_params
    if ema_decay:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state.step))
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, mutable=dict(new_mutable),
                          ema_params=ema, loss_params=loss_params, loss_opt_state=loss_opt_state)
    return state, metrics
  return step


def make_eval_step(model, ema: bool = False):
  """`step(state, batch) -> sums` of masked top-1 / top-5 hits, loss and example count (and the MACs executed,
  for a model whose `out["macs"]` holds them per image)."""
  def step(state, batch):
    logits, out = model.apply(state.variables(ema), batch["image"], train=False)
    logits = logits.astype(jnp.float32)
    mask = batch["mask"].astype(jnp.float32)
    labels = batch["label"]
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    sums = {"top1": jnp.sum(mask * (logits.argmax(-1) == labels)),
            "top5": jnp.sum(mask * jnp.any(top5 == labels[:, None], axis=-1)),
            "loss": jnp.sum(mask * nll), "count": jnp.sum(mask)}
    if "macs" in out:  # an adaptive model's MACs per image, as executed (A-ViT, AdaViT)
      sums["macs"] = jnp.sum(mask * out["macs"].astype(jnp.float32))
    return sums
  return step
