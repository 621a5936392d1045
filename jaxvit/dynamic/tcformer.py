"""TCFormer's clustering-based token merge, CTM (Zeng et al., "Not All Tokens Are Equal: Human-centric Visual
Analysis via Token Clustering Transformer", CVPR 2022, arXiv:2204.08680), on a ViT: between two blocks the N patch
tokens become M cluster tokens, static shapes (M from the config). Follows the official zengwang430521/TCFormer
`tcformer_module/tcformer_utils.py` (`cluster_dpc_knn`, `merge_tokens`) and `tcformer_layers.py` (`CTM`) @ 1ea72a8.

- CTM: LayerNorm (`norm`), a token score s = Linear(x) (`score`), weights exp(s).
- DPC-kNN clustering (without gradient): d_ij = ||x_i - x_j|| / sqrt(C); local density
  rho_i = exp(-mean of d_ij^2 over the k nearest tokens, itself included) (k = 5); delta_i = distance to the
  nearest denser token (the densest: the largest distance of the image); the M tokens of highest rho * delta
  are the centres, each token joins its nearest centre (a centre its own cluster).
- Merging: y_m = sum_{i in m} e^{s_i} x_i / (sum_{i in m} e^{s_i} + 1e-6), so the score learns through it.
Departures: the CTM's stride-2 token convolution is left out (the ViT keeps its width), prefix tokens (class,
distillation, registers) pass unchanged (TCFormer has none), and density ties are broken by token index instead
of the official 1e-6 uniform noise (deterministic). `out["cluster_index"]` `[B, N]` maps each patch to its cluster.

`reduction=dict(kind="tcformer", location=6, tokens=49, k=5)`: before block `location` (default depth // 2),
M = `tokens` (default ceil(N / 4), the official sample ratio 0.25).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import dense, layer_norm

SAMPLE_RATIO = 0.25  # the official CTM's sample_ratio


def plan(model, cfg: dict) -> dict:
  """The merge before block `location` into `tokens` clusters with `k` neighbours; a ValueError names the key."""
  name, n = type(model).__name__, model.grid[0] * model.grid[1]
  location = cfg.get("location", model.depth // 2)
  tokens = cfg.get("tokens", max(math.ceil(n * SAMPLE_RATIO), 1))
  k = cfg.get("k", 5)
  if not isinstance(location, int) or not 0 <= location < model.depth:
    raise ValueError(f"{name}: reduction location={location!r}; accepted: a block 0..{model.depth - 1} (the merge "
                     f"runs before it)")
  if not isinstance(tokens, int) or not 1 <= tokens <= n:
    raise ValueError(f"{name}: reduction tokens={tokens!r}; accepted: an int in 1..{n} (the patch count)")
  if not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"{name}: reduction k={k!r}; accepted: an int in 1..{n} (nearest neighbours of the density)")
  return dict(kind="tcformer", location=location, tokens=tokens, k=k, prefix=model.num_prefix_tokens,
              blocks=({},) * model.depth)


def cluster_dpc_knn(x, num_clusters: int, k: int = 5):
  """`[B, N]` cluster index of each token of `x` `[B, N, C]` by DPC-kNN (`cluster_dpc_knn`), no gradient; clusters
  are numbered in the order of their centres' scores (highest first)."""
  x = jax.lax.stop_gradient(x.astype(jnp.float32))
  n, c = x.shape[1], x.shape[2]
  sq = jnp.sum(x * x, axis=-1)
  dist = jnp.sqrt(jnp.maximum(sq[:, :, None] + sq[:, None, :] - 2 * jnp.einsum("bic,bjc->bij", x, x), 0.0))
  dist = dist / math.sqrt(c)  # [B, N, N]
  nearest = -jax.lax.top_k(-dist, k)[0]  # the k smallest, itself included
  density = jnp.exp(-jnp.mean(nearest ** 2, axis=-1))  # [B, N]
  order = jnp.arange(n)
  denser = (density[:, None, :] > density[:, :, None]) | \
      ((density[:, None, :] == density[:, :, None]) & (order[None, :] < order[:, None])[None])  # [B, i, j]
  farthest = jnp.max(dist, axis=(1, 2))[:, None, None]
  delta = jnp.min(jnp.where(denser, dist, farthest), axis=-1)
  _, centres = jax.lax.top_k(delta * density, num_clusters)  # [B, M]
  to_centres = jnp.take_along_axis(dist, centres[:, :, None], axis=1)  # [B, M, N]
  index = jnp.argmin(to_centres, axis=1)  # [B, N]
  rows = jnp.arange(x.shape[0])[:, None]
  return index.at[rows, centres].set(jnp.broadcast_to(jnp.arange(num_clusters), centres.shape))


def merge_tokens(x, index, num_clusters: int, weight):
  """`[B, M, C]`: each cluster's tokens averaged with `weight` `[B, N, 1]` (`merge_tokens`:
  w_i / (sum of its cluster's w + 1e-6))."""
  segment_sum = jax.vmap(lambda values, ids: jax.ops.segment_sum(values, ids, num_clusters))
  total = segment_sum(weight, index) + 1e-6  # [B, M, 1]
  share = weight / jnp.take_along_axis(total, index[..., None], axis=1)
  return segment_sum(x * share.astype(x.dtype), index)


class ClusterMerge(nn.Module):
  """TCFormer's CTM on the patch tokens (the first `prefix` tokens pass): `[B, P + N, C] -> [B, P + M, C]` and the
  cluster index `[B, N]`."""
  tokens: int  # M
  k: int = 5
  prefix: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    patches = layer_norm(1e-5, name="norm", **kw)(x[:, self.prefix:])  # torch's LayerNorm default eps
    weight = jnp.exp(dense(1, ("embed", None), name="score", **kw)(patches).astype(jnp.float32))  # [B, N, 1]
    index = cluster_dpc_knn(patches, self.tokens, self.k)
    merged = merge_tokens(patches, index, self.tokens, weight)
    return jnp.concatenate([x[:, :self.prefix], merged.astype(x.dtype)], axis=1), index
