"""Token Merging (ToMe, Bolya et al. 2023, arXiv:2210.09461), as `facebookresearch/ToMe` `tome/merge.py`
and `tome/patch/timm.py` compute it, with static shapes: each block merges a config-fixed number r
of tokens, so every layer's token count is known when the model is traced.

Between attention and MLP, tokens are split alternately into sets A and B; each A token's best
match in B is its highest cosine similarity of head-averaged keys (sec. 3, "bipartite soft
matching"); the r most similar A tokens are averaged into their matches, weighted by how many
patches each already holds (`size`), and attention adds log(size) to its logits ("proportional
attention", eq. 1). The class (and distillation) token is never merged.
"""

from typing import Callable, Sequence, Union

import jax
import jax.numpy as jnp


def parse_r(num_layers: int, r: Union[int, Sequence]) -> list[int]:
  """Tokens merged per layer, ToMe's `tome/utils.py::parse_r`: an int (constant), `(r, inflection)`
  (a linear schedule: -1 decreasing, 0 constant, +1 increasing) or a per-layer list (zero-padded)."""
  if isinstance(r, (list, tuple)) and (len(r) != 2 or isinstance(r, list)):
    r = list(r)
    return r + [0] * (num_layers - len(r))
  inflect = 0.0
  if isinstance(r, (list, tuple)):
    r, inflect = r
  low = int(r * (1.0 - inflect))
  high = 2 * r - low
  step = (high - low) / (num_layers - 1) if num_layers > 1 else 0.0
  return [int(low + step * i) for i in range(num_layers)]


def token_counts(num_tokens: int, schedule: Sequence[int], num_protected: int) -> list[int]:
  """Tokens entering each block's MLP under `schedule`: each merges min(r, (N - protected) // 2)."""
  counts = []
  for r in schedule:
    num_tokens -= max(min(r, (num_tokens - num_protected) // 2), 0)
    counts.append(num_tokens)
  return counts


def bipartite_soft_matching(metric, r: int, class_token: bool = False, distill_token: bool = False) -> Callable:
  """`merge(x, mode) -> x'` removing r tokens `[B, N, C] -> [B, N - r, C]` by ToMe's bipartite matching
  on `metric` `[B, N, d]`; `mode` is "sum" or "max" (ToMe's `scatter_reduce` "sum" / "amax").
  r is capped at (N - protected) // 2; the matching carries no gradient."""
  protected = int(class_token) + int(distill_token)
  n = metric.shape[1]
  r = min(r, (n - protected) // 2)
  if r <= 0:
    return lambda x, mode="sum": x
  metric = jax.lax.stop_gradient(metric.astype(jnp.float32))
  metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
  a, b = metric[:, ::2], metric[:, 1::2]
  scores = a @ b.swapaxes(-1, -2)
  if class_token:
    scores = scores.at[:, 0, :].set(-jnp.inf)
  if distill_token:
    scores = scores.at[:, :, 0].set(-jnp.inf)
  node_max, node_idx = scores.max(axis=-1), scores.argmax(axis=-1)
  edge_idx = jnp.argsort(-node_max, axis=-1)  # most similar first
  unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
  dst_idx = jnp.take_along_axis(node_idx, src_idx, axis=-1)
  if class_token:
    unm_idx = jnp.sort(unm_idx, axis=-1)  # keeps the class token first

  def merge(x, mode: str = "sum"):
    src, dst = x[:, ::2], x[:, 1::2]
    unm = jnp.take_along_axis(src, unm_idx[..., None], axis=1)
    moved = jnp.take_along_axis(src, src_idx[..., None], axis=1)
    scatter = jax.vmap(lambda d, i, s: d.at[i].add(s) if mode == "sum" else d.at[i].max(s))
    dst = scatter(dst, dst_idx, moved)
    if distill_token:
      return jnp.concatenate([unm[:, :1], dst[:, :1], unm[:, 1:], dst[:, 1:]], axis=1)
    return jnp.concatenate([unm, dst], axis=1)
  return merge


def merge_wavg(merge: Callable, x, size):
  """ToMe's size-weighted average: `(sum(size * x) / sum(size), sum(size))` over each merged group."""
  x = merge(x * size, "sum")
  size = merge(size, "sum")
  return x / size, size


def merge_source(merge: Callable, source):
  """Which input tokens each token now holds (`[B, N, N0]` 0/1), for visualising the merged groups."""
  return merge(source, "max")
