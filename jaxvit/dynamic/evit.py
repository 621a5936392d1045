"""EViT's token reorganisation (Liang et al. 2022, arXiv:2202.07800, sec. 3), as `youweiliang/evit`
`evit.py` computes it, with static shapes: at the configured blocks, between attention and MLP,
only the ceil(keep_rate * (N - 1)) non-class tokens the class token attends to most (head-averaged
attention) are kept, ordered by that attention; with `fuse_token` the others are summed, weighted by
their attention, into one extra token ("inattentive token fusion", eq. 3). Plain Top-K pruning is
`fuse_token=False`, the official code's default.
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp


def kept_tokens(num_tokens: int, depth: int, keep_rate: float, locations: Sequence[int], fuse_token: bool) -> list[int]:
  """Non-class tokens each block keeps (0: it prunes nothing) for `num_tokens` non-class tokens in;
  EViT's defaults keep 0.7 at blocks 3, 6, 9 (0-based: the 4th, 7th, 10th)."""
  if not 0 < keep_rate <= 1:
    raise ValueError(f"reduction keep_rate={keep_rate}; accepted: (0, 1]")
  if any(not 0 <= i < depth for i in locations):
    raise ValueError(f"reduction locations={tuple(locations)}; accepted: blocks 0..{depth - 1}")
  keep = []
  for i in range(depth):
    left = math.ceil(keep_rate * num_tokens) if i in locations else num_tokens
    keep.append(left if left < num_tokens else 0)
    num_tokens = left + (int(fuse_token) if left < num_tokens else 0)
  return keep


def warmup_keep_rate(step: int, keep_rate: float, start: int, steps: int, levels: int = 4) -> float:
  """EViT's keep-rate warm-up (`helpers.py` `adjust_keep_rate`): 1 until `start`, then a cosine from 1 to
  `keep_rate` over `steps`, then `keep_rate`; here snapped to the nearest of `levels + 1` evenly spaced rates
  from 1 to `keep_rate`, so a jitted step compiles at most `levels + 1` times instead of at every step."""
  if step < start:
    return 1.0
  if step >= start + steps:
    return keep_rate
  rate = keep_rate + (1.0 - keep_rate) * (math.cos((step - start) / steps * math.pi) + 1) * 0.5
  grid = [round(1.0 - (1.0 - keep_rate) * i / levels, 12) for i in range(levels + 1)]
  return min(grid, key=lambda g: abs(g - rate))


def warmup_model(model, warmup: dict, step: int):
  """`model` with the keep rate `warmup_keep_rate` gives at `step`; `warmup` is `config.keep_rate_warmup`:
  `dict(start=steps at keep rate 1, steps=cosine steps, levels=4)`, on a model with an EViT reduction."""
  reduction = dict(getattr(model, "reduction", None) or {})
  if reduction.get("kind") != "evit":
    raise ValueError(f"config.keep_rate_warmup needs config.model.overrides.reduction of kind 'evit'; the model has "
                     f"{reduction or 'no reduction'}")
  unknown = sorted(set(warmup) - {"start", "steps", "levels"})
  if unknown or "steps" not in warmup:
    raise ValueError(f"config.keep_rate_warmup={dict(warmup)}: accepted keys start, steps (required), levels")
  rate = warmup_keep_rate(step, reduction.get("keep_rate", 0.7), int(warmup.get("start", 0)), int(warmup["steps"]),
                          int(warmup.get("levels", 4)))
  return model.clone(reduction=dict(reduction, keep_rate=rate)), rate


def keep_attentive(x, cls_attn, keep: int, fuse_token: bool):
  """`(x', kept)`: the class token, then the `keep` tokens of highest `cls_attn` `[B, N - 1]` in that
  order (and their fusion); `kept` `[B, keep]` indexes them among the input's non-class tokens."""
  others = x[:, 1:]
  top_attn, kept = jax.lax.top_k(cls_attn, keep)
  parts = [x[:, :1], jnp.take_along_axis(others, kept[..., None], axis=1)]
  if fuse_token:
    dropped = cls_attn * (1.0 - jax.nn.one_hot(kept, cls_attn.shape[1], dtype=cls_attn.dtype).sum(axis=1))
    parts.append(jnp.sum(others * dropped[..., None].astype(x.dtype), axis=1, keepdims=True))
  return jnp.concatenate(parts, axis=1), kept
