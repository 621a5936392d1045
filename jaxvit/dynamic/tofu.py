"""Token Fusion (ToFu; Kim et al., "Token Fusion: Bridging the Gap between Token Pruning and Token Merging", WACV
2024, arXiv:2312.01026), on ToMe's bipartite soft matching (`jaxvit.dynamic.tome`), static shapes: each block
removes a config-fixed r tokens between attention and MLP.

- Pruning or merging: merging averages inputs, which suits blocks that respond almost linearly to
  interpolated inputs (the later ones); where a block is sensitive to interpolation (the early ones) ToFu prunes
  instead: ToMe's matching still picks the r most redundant tokens of set A, and they are dropped rather than
  averaged into their matches. Blocks before `merge_from` prune, the others merge; the default, depth // 2 + 1
  (DeiT: prune in blocks 0..6, merge in 7..11), is OpenToMe's `opentome/timm/tofu.py` (`'tofu' if i >
  len(blocks) // 2 else 'prune'`): the authors released no code.
- MLERP merging (a multi-token variant of SLERP): the merged token keeps the direction of the average and the
  largest norm of the tokens it merges, x* = x_bar / ||x_bar|| * max_i ||x_i||, so merging does not shrink
  feature norms (an average of non-parallel tokens is shorter than they are). x_bar is ToMe's size-weighted
  average (the sizes also feed proportional attention, `prop_attn`). OpenToMe also takes the maximum norm, but
  averages without sizes and divides by the destination token's norm before merging rather than by ||x_bar||
  (its merged token then does not have that norm).

`reduction=dict(kind="tofu", r=13, merge_from=7, prop_attn=True)`; r as ToMe's (`tome.parse_r`).
"""

import jax.numpy as jnp

from jaxvit.dynamic import tome

MERGE_MODES = ("prune", "mlerp")


def default_merge_from(depth: int) -> int:
  """The first merging block: depth // 2 + 1 (OpenToMe's split)."""
  return depth // 2 + 1


def plan(model, cfg: dict) -> dict:
  """Per-block `Block` fields (`merge_r`, `merge_mode` "prune" / "mlerp", ...); a ValueError names the key."""
  owner = type(model).__name__
  merge_from = cfg.get("merge_from", default_merge_from(model.depth))
  if not isinstance(merge_from, int) or not 0 <= merge_from <= model.depth:
    raise ValueError(f"{owner}: reduction merge_from={merge_from!r}; accepted: a block 0..{model.depth} (blocks "
                     f"before it prune, the others merge; {model.depth}: prune only)")
  schedule = tome.parse_r(model.depth, cfg["r"])
  if len(schedule) != model.depth or any(not isinstance(r, int) or r < 0 for r in schedule):
    raise ValueError(f"{owner}: reduction r={cfg['r']!r}; accepted: an int >= 0, (r, inflection) or a list of at "
                     f"most depth={model.depth} ints >= 0")
  protected = (model.class_token, model.dist_token)
  blocks = tuple(dict(merge_r=r, prop_attn=bool(cfg.get("prop_attn", True)), protected=protected,
                      merge_mode="prune" if i < merge_from else "mlerp") for i, r in enumerate(schedule))
  return dict(kind="tofu", blocks=blocks, merge_from=merge_from)


def fuse(merge, x, size, mode: str, distill_token: bool = False):
  """`(x', size')` of ToMe's `merge` (`tome.bipartite_soft_matching`) by ToFu's `mode`: "prune" drops the matched
  A tokens (their destinations and sizes unchanged), "mlerp" merges them by MLERP (sizes summed)."""
  if merge(size, "sum").shape[1] == size.shape[1]:  # r capped to 0: nothing to prune or merge
    return x, size
  if mode == "prune":
    return _prune(merge, x, distill_token), _prune(merge, size, distill_token)
  if mode != "mlerp":
    raise ValueError(f"ToFu merge mode {mode!r}; accepted: {MERGE_MODES}")
  average, merged_size = tome.merge_wavg(merge, x, size)
  norm = jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True)
  largest = merge(norm, "max")  # max_i ||x_i|| over each group
  grouped = merge(jnp.ones_like(norm), "sum") > 1  # tokens that absorbed others (the rest stay as they are)
  length = jnp.maximum(jnp.linalg.norm(average.astype(jnp.float32), axis=-1, keepdims=True), 1e-12)
  fused = (average.astype(jnp.float32) / length * largest).astype(x.dtype)
  return jnp.where(grouped, fused, average), merged_size


def _prune(merge, x, distill_token: bool):
  """ToMe's output layout, `[unm, dst]` (`[unm[:1], dst[:1], unm[1:], dst[1:]]` with a distillation token), with
  the unmerged A tokens from `merge` and set B as it was: the matched A tokens are gone."""
  dst = x[:, 1::2]
  merged = merge(x, "sum")
  unm = merged.shape[1] - dst.shape[1]
  if distill_token:
    return jnp.concatenate([merged[:, :1], dst[:, :1], merged[:, 2:unm + 1], dst[:, 1:]], axis=1)
  return jnp.concatenate([merged[:, :unm], dst], axis=1)
