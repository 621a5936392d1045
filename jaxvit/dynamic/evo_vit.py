"""Evo-ViT: slow-fast token evolution (Xu et al. 2022, "Evo-ViT: Slow-Fast Token Evolution for Dynamic Vision
Transformer", arXiv:2108.01390, sec. 3); the official YifanXu74/Evo-ViT `deit/evo_deit.py` (`EvoVisionTransformer`
with `stage_wise_prune`) is the file followed.

*Structure-preserving token selection* (sec. 3.2): a global class attention, the class token's attention to the
patches summed over heads and carried across blocks as a moving average (`tradeoff` t: g <- (1 - t) g + t a; the
official 1 in blocks 0..3, then 0.5), ranks the patch tokens. At the start of each stage (blocks 4 and 8 of 12) the
tokens are sorted by it; the top `keep_rate` of them (*informative tokens*) and the class token go through the
stage's blocks (*slow updating*) while the rest (*placeholder tokens*) wait, and only the processed tokens' global
attention is updated. At the stage's end the placeholders rejoin, in their sorted order (the released DeiT code's
fast updating: placeholders pass unchanged). The model classifies from the average of all patch tokens (LayerNorm
after pooling). Static shapes: every stage keeps int(N x keep_rate) tokens.

`reduction=dict(kind="evo_vit", keep_rate=0.5, stages=((4, 8), (8, 12)), tradeoff=0.5)` on a ViT with a class token.
Sums and head averages of the class attention rank tokens identically (one factor for every block); jaxvit averages.
"""

import jax.numpy as jnp

DEFAULT_STAGES = ((4, 8), (8, 12))  # [start, end) blocks of the official 12-block DeiT


def plan(model, cfg: dict) -> dict:
  """The encoder's Evo-ViT plan: `starts` {block: kept patch tokens}, `ends` (blocks after which the placeholders
  rejoin), `tradeoff` per block; a ValueError names the key otherwise."""
  owner = type(model).__name__
  stages = tuple(tuple(s) for s in cfg.get("stages", DEFAULT_STAGES))
  keep_rate, tradeoff = float(cfg.get("keep_rate", 0.5)), float(cfg.get("tradeoff", 0.5))
  bounds = [b for s in stages for b in s]
  if any(len(s) != 2 or s[0] < 1 or s[0] >= s[1] for s in stages) or bounds != sorted(bounds) or \
     bounds[-1] > model.depth:
    raise ValueError(f"{owner}: reduction stages={stages}; accepted: increasing non-overlapping [start, end) block "
                     f"ranges within 1..{model.depth} (a stage needs a block before it to rank the tokens)")
  if not 0.0 < keep_rate <= 1.0 or not 0.0 < tradeoff <= 1.0:
    raise ValueError(f"{owner}: reduction keep_rate={keep_rate}, tradeoff={tradeoff}; accepted: (0, 1] each")
  patches = model.grid[0] * model.grid[1]
  first = stages[0][0] if stages else model.depth
  return dict(starts={s: int(patches * keep_rate) for s, _ in stages}, ends={e - 1 for _, e in stages},
              tradeoff=tuple(1.0 if i < first else tradeoff for i in range(model.depth)))


def update(global_attn, cls_attn, tradeoff: float):
  """g[:, :n] <- (1 - t) g[:, :n] + t a for the `n` patch tokens a block processed (`cls_attn` `[B, n]`); the first
  block (`global_attn` None) starts it."""
  if global_attn is None:
    return cls_attn
  n = cls_attn.shape[1]
  head = (1 - tradeoff) * global_attn[:, :n] + tradeoff * cls_attn.astype(global_attn.dtype)
  return jnp.concatenate([head, global_attn[:, n:]], axis=1)


def select(x, global_attn, keep: int):
  """Sorts the patch tokens of `x` `[B, 1 + N, C]` by `global_attn` `[B, N]` (descending): `(class token + the
  top `keep`, the placeholders, the sorted attention)`."""
  order = jnp.argsort(-global_attn, axis=1)
  patches = jnp.take_along_axis(x[:, 1:], order[..., None], axis=1)
  return jnp.concatenate([x[:, :1], patches[:, :keep]], axis=1), patches[:, keep:], \
      jnp.take_along_axis(global_attn, order, axis=1)
