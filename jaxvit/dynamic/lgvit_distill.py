"""LGViT's second training stage: the exits distilled from the frozen backbone (Xu et al. 2023, "LGViT: Dynamic
Early Exiting for Accelerating Vision Transformer", arXiv:2308.00255, sec. 3.3), the official
`train_strategy='distillation_LGViT'` of `DeiTHighwayForImageClassification_distillation.forward`
(falcon-xu/LGViT `models/deit_highway/modeling_highway_deit.py`, commit 3147fb8, with its `DownSampling`,
`cal_hete_loss`, `cal_homo_loss`; coefficients of `scripts/train_distillation_deit.sh`).

The official loss is `(1 - c) sum_i CE_i + c sum_i KL_i + hete_coef sum L_hete + homo_coef sum L_homo`, c = 0.3,
both feature coefficients 0.01. The prediction part is `jaxvit.dynamic.exits.multi_exit_loss` (`official_exit_loss`
gives the weights); this module adds the feature terms on the exits' transformed patches `f(patches)`
(`out["exit_features{i}"]`, the official `highway_exit[1]`) and the last block's tokens `out["block{depth-1}"]`
(before the final norm, as the official `hidden_list[-1]`):
- heterogeneous (`hete_loss`): the first and the last local perception exit against the last block's patch tokens,
  the first and the last global aggregation exit against them subsampled by the head's own stride r
  (`AvgPool2d(1, r)`: every r-th row and column), each `KL(softmax_C(teacher) || softmax_C(student))` summed over
  tokens and channels / batch (`kl_div(..., "batchmean")`); the teacher tokens are stopped (the official backbone
  runs under `no_grad`).
- homogeneous (`homo_loss`): each local exit but the last against the last local one, MSE of the features; each
  global exit but the last against the last global one, MSE of their Gram matrices `x^T x` `[B, C, C]` (`'inner'`).
  The last exit of a group is not stopped, as in the official code: it learns from these terms too.

Departures, for other placements than the official 8 exits on DeiT-B (exits 0-3 local, 4-7 global, `[:, 2:]` for its
class and distillation tokens): the groups are the configured LGViT heads by kind, in block order ("linear" exits
take no part); a group's first and last exit are one term when it has a single exit; the prefix tokens are the
model's (`num_prefix_tokens`) and the grid its own (`model.grid`, also non-square). The official teacher logits
skip the backbone's final LayerNorm (`classifier(hidden_list[-1][0][:, 0])`); jaxvit's are the model's own final
logits. The backbone is frozen with `optimizer.lr_multipliers=dict(exit_=1.0, default=0.0)`: gradients reach the
backbone through the exits' inputs, its updates are zero.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from jaxvit.dynamic import exits

FIELDS = ("homo_weight", "hete_weight")  # config.exit_loss.lgvit
LOCAL_KINDS = ("local", "local_1x1")


def downsample(patches, grid, stride: int):
  """The official `DownSampling(r)` (`AvgPool2d(1, r)` on the grid): `[B, h w, C] -> [B, ceil(h/r) ceil(w/r), C]`."""
  b, _, c = patches.shape
  return patches.reshape(b, *grid, c)[:, ::stride, ::stride].reshape(b, -1, c)


def hete_loss(student, teacher):
  """The official `cal_hete_loss`: KL(softmax(teacher) || softmax(student)) over the channels of each token, summed
  over tokens and channels, divided by the batch. `[B, N, C]` each."""
  log_s = jax.nn.log_softmax(student.astype(jnp.float32), axis=-1)
  log_t = jax.nn.log_softmax(teacher.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_t) * (log_t - log_s)) / student.shape[0]


def homo_loss(student, teacher, gram: bool = False):
  """The official `cal_homo_loss(loss_type='mse')`: mean squared error of the features (`align_type='none'`) or of
  their Gram matrices `x^T x` `[B, C, C]` (`'inner'`, for heads whose token counts differ)."""
  student, teacher = student.astype(jnp.float32), teacher.astype(jnp.float32)
  if gram:
    student = jnp.einsum("bnc,bnd->bcd", student, student)
    teacher = jnp.einsum("bnc,bnd->bcd", teacher, teacher)
  return jnp.mean((student - teacher) ** 2)


def _stride(kind: str) -> int:
  return int(kind[len("global_r"):])


def feature_terms(features: dict, kinds: dict, last_tokens, grid, num_prefix_tokens: int):
  """`(hete, homo)`, the sums of the heterogeneous and homogeneous terms (module docstring). `features`: block ->
  that exit's `[B, N_b, C]`; `kinds`: block -> head kind (LGViT's only); `last_tokens`: the last block's
  `[B, P + h w, C]`."""
  local = [b for b in sorted(kinds) if kinds[b] in LOCAL_KINDS]
  glob = [b for b in sorted(kinds) if kinds[b].startswith("global_r")]
  teacher = jax.lax.stop_gradient(last_tokens[:, num_prefix_tokens:])
  ends = lambda group: list(dict.fromkeys((group[0], group[-1]))) if group else []  # noqa: E731
  hete = [hete_loss(features[b], teacher) for b in ends(local)]
  hete += [hete_loss(features[b], downsample(teacher, grid, _stride(kinds[b]))) for b in ends(glob)]
  homo = [homo_loss(features[b], features[local[-1]]) for b in local[:-1]]
  homo += [homo_loss(features[b], features[glob[-1]], gram=True) for b in glob[:-1]]
  zero = jnp.zeros([], jnp.float32)
  return sum(hete, zero), sum(homo, zero)


def check_config(lgvit) -> dict:
  """`config.exit_loss.lgvit` as `dict(homo_weight, hete_weight)` (floats >= 0, default 0), or a ValueError."""
  if not hasattr(lgvit, "items"):
    raise ValueError(f"config.exit_loss.lgvit={lgvit!r}; accepted: a dict with keys {FIELDS}")
  lgvit = dict(lgvit)
  unknown = sorted(set(lgvit) - set(FIELDS))
  if unknown:
    raise ValueError(f"config.exit_loss.lgvit keys {unknown}; accepted: {', '.join(FIELDS)}")
  for field, value in lgvit.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
      raise ValueError(f"config.exit_loss.lgvit.{field}={value!r}; accepted: a number >= 0")
  return {field: float(lgvit.get(field, 0.0)) for field in FIELDS}


def feature_loss(loss_fn: Callable, model, lgvit) -> Callable:
  """`loss_fn` (the multi-exit loss) plus `hete_weight x hete + homo_weight x homo` (`config.exit_loss.lgvit`);
  metrics add `lgvit_hete` and `lgvit_homo`. `model`: a ViT whose `exits` have LGViT heads."""
  weights = check_config(lgvit)
  if not getattr(model, "exits", None):
    raise ValueError(f"config.exit_loss.lgvit needs a ViT with LGViT exit heads (config.model.overrides.exits="
                     f"dict(blocks=..., head='lgvit')); {type(model).__name__} has none")
  kinds = {b: k for b, k in zip(*exits.check_exits(model.exits, model.depth)) if k != "linear"}
  if not kinds:
    raise ValueError(f"config.exit_loss.lgvit needs LGViT exit heads; exits={model.exits!r} are linear (accepted: "
                     f"exits=dict(blocks=..., head='lgvit') or kinds {exits.HEAD_KINDS[1:]})")
  last, grid, prefix = f"block{model.depth - 1}", model.grid, model.num_prefix_tokens

  def loss(logits, out, batch, loss_params=None):
    total, metrics = loss_fn(logits, out, batch, loss_params)
    features = {b: out[f"exit_features{b}"] for b in kinds}
    hete, homo = feature_terms(features, kinds, out[last], grid, prefix)
    metrics.update(lgvit_hete=hete, lgvit_homo=homo)
    return total + weights["hete_weight"] * hete + weights["homo_weight"] * homo, metrics
  return loss


def official_exit_loss(num_exits: int, num_classes: int, coefficient: float = 0.3, homo_weight: float = 0.01,
                       hete_weight: float = 0.01) -> dict:
  """`config.exit_loss` for the official second stage: `(1 - c) sum CE_exit + c sum KL_exit` at T = 2, whose KL
  (`kl_div(sum) T^2 / numel`) divides by batch x classes, i.e. `weights` (1 - c) per exit and 0 for the (frozen)
  final head, `distill_weight` c / classes; plus the feature terms (`lgvit`). The official cross-entropy has no
  label smoothing (`config.label_smoothing = 0`)."""
  return dict(weights=(1.0 - coefficient,) * num_exits + (0.0,), distill_weight=coefficient / num_classes,
              temperature=2.0, lgvit=dict(homo_weight=homo_weight, hete_weight=hete_weight))
