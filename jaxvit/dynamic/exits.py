"""Multi-exit ViTs and early-exit inference (the survey's depth adaptation).

Internal classifiers ("exits") read the class token (or the pooled patch tokens) after configured blocks:
`VisionTransformer(exits=dict(blocks=(3, 6, 9)))` puts `exit_logits{i}` in `out`. Training is joint, a
weighted sum of every exit's loss and the final head's (BranchyNet, Teerapittayanon et al. 2016,
arXiv:1709.01686, eq. 2), optionally with each exit distilled from the final head (the distillation-based
multi-exit training of LGViT, Xu et al. 2023, arXiv:2308.00255, sec. 3.3: KL(final / T || exit / T) T^2, the
final head's logits stopped). At inference an example stops at the first exit whose rule fires: `entropy`
(of its softmax) below the threshold (DeeBERT), `confidence` (max probability) above it, or `patience` (the
argmax unchanged for `threshold` consecutive exits, PABEE, arXiv:2006.04152); otherwise the final head answers.
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.dynamic import exit_heads

RULES = ("entropy", "confidence", "patience")
HEADS = ("linear", "lgvit")  # `exits` head: one kind for every exit, "lgvit" (LGViT's placement), or one per exit
HEAD_KINDS = ("linear", "local", "local_1x1", "global_r<k>")  # per exit: the final head's twin, or LGViT's heads


class ExitHead(nn.Module):
  """An exit's classifier, the final head's twin: LayerNorm then the model's pooling (class token), or pooling
  then LayerNorm (`fc_norm`, pooled patches), then a linear layer."""
  num_classes: int
  global_pool: str = "token"
  num_prefix_tokens: int = 1
  fc_norm: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, **unused):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = layers.layer_norm(name="norm", **kw)
    x = tokens if self.fc_norm else norm(tokens)
    pooled = layers.pool_tokens(x, self.global_pool, self.num_prefix_tokens)
    pooled = norm(pooled) if self.fc_norm else pooled
    return layers.dense(self.num_classes, ("embed", "classes"), name="head", kernel_init=nn.initializers.zeros,
                        **kw)(pooled)


def check_exits(exits: dict, depth: int, owner: str = "VisionTransformer") -> tuple[tuple[int, ...], tuple[str, ...]]:
  """`(blocks, kinds)` from an `exits` dict (one head kind per exit), or a ValueError naming the key.

  `head`: "linear" (default, the final head's twin), "lgvit" (LGViT's official kinds for 2, 4, 6 or 8 exits,
  `exit_heads.LGVIT_KINDS`), any one of HEAD_KINDS for every exit, or a sequence of them, one per exit."""
  unknown = sorted(set(exits) - {"blocks", "head"})
  blocks = tuple(exits.get("blocks", ()))
  if unknown or not blocks:
    raise ValueError(f"{owner}: exits={exits!r}; accepted: dict(blocks=(...), head='linear'), blocks required")
  if list(blocks) != sorted(set(blocks)) or not all(0 <= b < depth - 1 for b in blocks):
    raise ValueError(f"{owner}: exits blocks={blocks}; accepted: increasing blocks 0..{depth - 2} (the last block "
                     f"feeds the final head)")
  head = exits.get("head", "linear")
  if head == "lgvit":
    if len(blocks) not in exit_heads.LGVIT_KINDS:
      raise ValueError(f"{owner}: exits head='lgvit' with {len(blocks)} exits; accepted: "
                       f"{sorted(exit_heads.LGVIT_KINDS)} exits (LGViT's placements)")
    return blocks, exit_heads.LGVIT_KINDS[len(blocks)]
  kinds = (head,) * len(blocks) if isinstance(head, str) else tuple(head)
  if len(kinds) != len(blocks) or not all(isinstance(k, str) and _is_kind(k) for k in kinds):
    raise ValueError(f"{owner}: exits head={head!r}; accepted: {HEADS}, one of {HEAD_KINDS} or a sequence of them "
                     f"with one entry per exit ({len(blocks)})")
  return blocks, kinds


def _is_kind(kind: str) -> bool:
  rest = kind[len("global_r"):]
  return kind in ("linear", "local", "local_1x1") or (kind.startswith("global_r") and rest.isdigit() and int(rest) > 0)


def exit_head(kind: str, model, name: str | None = None) -> nn.Module:
  """One exit's head for `model` (a ViT): the final head's twin for "linear", else LGViT's local perception /
  global aggregation head on the patch grid (`exit_heads`). Call it with `head_inputs(model, train)`."""
  kw = dict(dtype=model.dtype, param_dtype=model.param_dtype, name=name)
  if kind == "linear":
    fc_norm = model.global_pool != "token" if model.fc_norm is None else model.fc_norm
    return ExitHead(model.num_classes, model.global_pool, model.num_prefix_tokens, fc_norm, **kw)
  return exit_heads.exit_head(kind, model.num_classes, class_token=model.class_token, dist_token=model.dist_token,
                              **kw)


def head_inputs(model, train: bool = False) -> dict:
  """The keyword arguments every exit head takes besides the tokens."""
  return dict(grid=model.grid, num_prefix_tokens=model.num_prefix_tokens, train=train)


def exit_costs(model) -> tuple[list[float], list[int]]:
  """`(macs, depths)` per exit then the final head: the MACs an example leaving there spent (its blocks, the head
  of every exit it passed, its own) and the blocks it ran. The stage ending at exit i (`span=(0, b_i + 1)`) runs
  blocks 0..b_i and that exit's head; the heads of the earlier exits are counted on their own."""
  if hasattr(model, "exit_costs"):  # a model with exits of its own (CF-ViT's coarse stage)
    return model.exit_costs()
  from jaxvit.bench.flops import count_macs
  from jaxvit.utils import init_variables, input_shape
  blocks, kinds = check_exits(model.exits, model.depth)
  model = model.clone(scan=False)
  images = jax.ShapeDtypeStruct((1,) + input_shape(model)[1:], jnp.float32)
  variables = jax.eval_shape(lambda: init_variables(model))
  _, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  heads = []
  for b, kind in zip(blocks, kinds):
    head, tokens = exit_head(kind, model), jax.ShapeDtypeStruct(out[f"block{b}"].shape, jnp.float32)
    head_variables = jax.eval_shape(lambda x: head.init(jax.random.key(0), x, **head_inputs(model)), tokens)
    heads.append(count_macs(head, head_variables, tokens, **head_inputs(model))["total"])
  stages = [count_macs(model, variables, images, span=(0, b + 1))["total"] for b in blocks]
  macs = [stage + sum(heads[:i]) for i, stage in enumerate(stages)] + [count_macs(model, variables, images)["total"]]
  return macs, [b + 1 for b in blocks] + [model.depth]


def depth_weights(model) -> list[float]:
  """Loss weights proportional to the blocks each exit (then the final head) has run, summing to 1: the
  "weighted" multi-exit loss of DeeBERT / LGViT's first training stage (official `train_strategy='weighted'`)."""
  blocks, _ = check_exits(model.exits, model.depth)
  depths = [b + 1 for b in blocks] + [model.depth]
  return [d / sum(depths) for d in depths]


def exit_keys(out: dict) -> list[str]:
  """The `exit_logits{i}` keys of a model's `out`, by block."""
  return sorted((k for k in out if k.startswith("exit_logits")), key=lambda k: int(k[len("exit_logits"):]))


def multi_exit_loss(base_loss: Callable, weights: Sequence[float] | None = None, distill_weight: float = 0.0,
                    temperature: float = 1.0) -> Callable:
  """`loss_fn(logits, out, batch, loss_params)`: sum_i w_i base_loss(exit_i) + w_final base_loss(final)
  (+ distill_weight x sum_i KL(softmax(final / T) || softmax(exit_i / T)) T^2, final stopped). `weights`: one
  per exit then the final head (default all 1). Metrics add `exit_accuracy{i}`."""
  def loss_fn(logits, out, batch, loss_params=None):
    keys = exit_keys(out)
    w = [1.0] * (len(keys) + 1) if weights is None else list(weights)
    if len(w) != len(keys) + 1:
      raise ValueError(f"config.exit_loss.weights has {len(w)} entries; the model has {len(keys)} exits and a final "
                       f"head ({len(keys) + 1})")
    total, metrics = base_loss(logits, out, batch, loss_params)
    total = w[-1] * total
    teacher = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32) / temperature)
    for weight, key in zip(w, keys):
      exit_loss, exit_metrics = base_loss(out[key], out, batch, loss_params)
      total = total + weight * exit_loss
      metrics[f"exit_accuracy{key[len('exit_logits'):]}"] = exit_metrics["accuracy"]
      if distill_weight:
        log_student = jax.nn.log_softmax(out[key].astype(jnp.float32) / temperature)
        kl = jnp.sum(teacher * (jnp.log(teacher + 1e-20) - log_student), axis=-1).mean()
        total = total + distill_weight * kl * temperature ** 2
    return total, metrics
  return loss_fn


def exit_scores(logits, rule: str):
  """Per-example score the rule thresholds: entropy (exit if below) or max probability (exit if above)."""
  probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  if rule == "entropy":
    return -jnp.sum(probs * jnp.log(probs + 1e-20), axis=-1)
  return probs.max(axis=-1)


def exit_index(exit_logits: Sequence, final_logits, rule: str, threshold: float) -> np.ndarray:
  """`[B]` index of the exit each example leaves at (len(exit_logits) = the final head)."""
  if rule not in RULES:
    raise ValueError(f"early-exit rule={rule!r}; accepted: {RULES}")
  n = len(exit_logits)
  batch = np.asarray(final_logits).shape[0]
  chosen = np.full(batch, n)
  if rule == "patience":
    patience = int(threshold)
    streak, previous = np.zeros(batch, int), np.full(batch, -1)
    for i, logits in enumerate(exit_logits):
      pred = np.asarray(logits).argmax(-1)
      streak = np.where(pred == previous, streak + 1, 1)
      previous = pred
      fire = (streak >= patience) & (chosen == n)
      chosen = np.where(fire, i, chosen)
    return chosen
  for i, logits in enumerate(exit_logits):
    score = np.asarray(exit_scores(logits, rule))
    fire = (score < threshold) if rule == "entropy" else (score > threshold)
    chosen = np.where(fire & (chosen == n), i, chosen)
  return chosen


def sweep(exit_logits: Sequence, final_logits, labels, macs: Sequence[float], rule: str,
          thresholds: Sequence[float], depths: Sequence[int]) -> list[dict]:
  """Accuracy, average exit depth and average MACs actually spent for each threshold.

  `macs[i]`: what an example leaving at exit i cost (its blocks and every exit head it passed), the last entry
  the full model; `depths[i]`: blocks run to reach exit i (the last: the model's depth).
  """
  final = np.asarray(final_logits)
  preds = [np.asarray(l).argmax(-1) for l in exit_logits] + [final.argmax(-1)]
  labels = np.asarray(labels)
  rows = []
  for threshold in thresholds:
    chosen = exit_index(exit_logits, final, rule, threshold)
    pred = np.choose(chosen, preds)
    rows.append(dict(rule=rule, threshold=float(threshold), accuracy=float((pred == labels).mean()),
                     avg_depth=float(np.mean(np.asarray(depths)[chosen])),
                     avg_gmacs=float(np.mean(np.asarray(macs)[chosen])) / 1e9,
                     exited=[float((chosen == i).mean()) for i in range(len(preds))]))
  return rows


def exit_stages(model) -> list[tuple[Callable, Callable | None]]:
  """The staged path's stages, one per exit then the final head: `(run, carry)`, `run(variables, inputs)` ->
  `(that exit's logits, out)`, `carry(inputs, out)` -> the next stage's inputs for the same examples (None for the
  last). A ViT's stage runs the blocks up to its exit (`span`) and carries the tokens; a model with stages of its
  own gives them (`model.exit_stages()`: CF-ViT's coarse and fine stages)."""
  if hasattr(model, "exit_stages"):
    return model.exit_stages()
  if getattr(model, "scan", False) or getattr(model, "reduction", None):
    raise ValueError("the staged early-exit path needs scan=False and no token reduction")
  blocks, _ = check_exits(model.exits, model.depth)
  stops = list(blocks) + [model.depth - 1]
  spans = [(0 if s == 0 else stops[s - 1] + 1, stops[s] + 1) for s in range(len(stops))]
  run = lambda span: lambda variables, x: model.apply(variables, x, span=span)  # noqa: E731
  return [(run(span), None if span[1] == model.depth else lambda x, out: out["tokens"]) for span in spans]


class StagedEarlyExit:
  """The real early-exit path: the model runs in stages (`exit_stages`), each ending at an exit, and only the
  examples whose rule did not fire go on. The survivors (every input array of the next stage) are padded to the
  smallest of a few bucket sizes (`buckets`, fractions of the batch), so each stage compiles at most `len(buckets)`
  times. `predict(images)` -> `(predictions, exit index)`, the same as `exit_index` on a full forward pass gives.
  """

  def __init__(self, model, variables, rule: str, threshold: float, buckets=(0.25, 0.5, 1.0)):
    if rule not in RULES:
      raise ValueError(f"early-exit rule={rule!r}; accepted: {RULES}")
    self.model, self.variables, self.rule, self.threshold, self.buckets = model, variables, rule, threshold, buckets
    self.stages = exit_stages(model)
    self.compiled = {}  # (stage, padded size) -> jitted stage

  def _stage(self, s: int, size: int):
    if (s, size) not in self.compiled:
      self.compiled[s, size] = jax.jit(self.stages[s][0])
    return self.compiled[s, size]

  def predict(self, images):
    n, last = images.shape[0], len(self.stages) - 1
    sizes = sorted({max(1, int(np.ceil(n * f))) for f in self.buckets} | {n})
    preds, chosen = np.full(n, -1), np.full(n, last)
    alive, x = np.arange(n), np.asarray(images)
    streak, previous = np.zeros(n, int), np.full(n, -1)
    for s, (_, carry) in enumerate(self.stages):
      m = len(alive)
      size = min(b for b in sizes if b >= m)
      pad = lambda a: np.concatenate([a, np.zeros((size - m,) + a.shape[1:], a.dtype)]) if size > m else a  # noqa
      logits, out = self._stage(s, size)(self.variables, jax.tree.map(pad, x))
      logits = np.asarray(logits)[:m]
      pred = logits.argmax(-1)
      if s == last:
        preds[alive] = pred
        break
      if self.rule == "patience":
        streak[alive] = np.where(pred == previous[alive], streak[alive] + 1, 1)
        previous[alive] = pred
        fire = streak[alive] >= int(self.threshold)
      else:
        score = np.asarray(exit_scores(logits, self.rule))
        fire = score < self.threshold if self.rule == "entropy" else score > self.threshold
      preds[alive[fire]], chosen[alive[fire]] = pred[fire], s
      alive, x = alive[~fire], jax.tree.map(lambda a: np.asarray(a)[:m][~fire], carry(x, out))
      if not len(alive):
        break
    return preds, chosen
