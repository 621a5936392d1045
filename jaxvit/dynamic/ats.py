"""ATS: adaptive token sampling (Fayyaz et al. 2022, arXiv:2111.15667, sec. 3), parameter-free.

Follows `adaptivetokensampling/ATS` `libs/models/transformers/ats_block.py` (commit 9271257) in its padded form
(`DROP_TOKENS=False`): an ATS block outputs a static K tokens, the class token and K - 1 sampled ones, where
duplicate samples are padding that a `policy` `[B, K]` masks as attention keys in every later block (sec. 3.2).
Scores are the class token's attention summed over heads times the value norms (eq. 4, `score_assignment_step`);
the K - 1 (or n_ref - 1) deterministic y values of the inverse-transform sampling (eq. 5-6, `create_ys`) pick the
nearest normalised-CDF entries (`inverse_transform_sampling`), duplicates become the pad index N - 1
(`get_unique_indices`); the sampled tokens' attention rows give the attention output, the raw input tokens at
those indices the residual.

Sample count: the official code samples n_ref - 1 y values (n_ref = the encoder's initial token count, 197 for
DeiT-S) and only runs when K equals the block's token count N (its `expand` needs K - 1 rows); with K < N it runs
only when n_ref = K, which then takes K - 1 y values over the top K - 1 CDF entries. `sample_count` uses exactly
those two cases.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.attention import _softmax_with_policy, merge_heads, qkv_heads

DEFAULT_LOCATIONS = (3, 4, 5, 6, 7, 8, 9, 10, 11)  # configs/ImageNet/DeiT_S.yaml ATS_BLOCKS


def output_tokens(n_tokens: float, n: int) -> int:
  """K of an ATS block on N tokens: `AdaptiveTokenSampler.forward`'s rule (> N: N; <= 1: a ratio of N; >= 8)."""
  if n_tokens > n:
    n_tokens = n
  if n_tokens <= 1.0:
    n_tokens = n_tokens * n
  if n_tokens < 8:
    n_tokens = 8
  return min(round(n_tokens), n)


def sample_count(k: int, n: int, n_ref: int) -> int:
  """Number of y values: n_ref - 1 when K = N (the official call), K - 1 when K < N (n_ref = K, see above)."""
  return n_ref - 1 if k == n else k - 1


def plan(n0: int, depth: int, n_tokens: Union[float, Sequence[float]], locations: Sequence[int]) -> list:
  """Per block `(K, samples)` (0, 0 off ATS blocks) for `n0` initial tokens: static token counts."""
  per = list(n_tokens) if isinstance(n_tokens, (list, tuple)) else [n_tokens] * len(locations)
  if len(per) != len(locations) or any(not isinstance(t, (int, float)) or t <= 0 for t in per):
    raise ValueError(f"reduction n_tokens={n_tokens!r}; accepted: a positive count or ratio (<= 1), or one per "
                     f"location ({len(locations)})")
  n, out = n0, []
  for i in range(depth):
    if i in locations:
      k = output_tokens(per[list(locations).index(i)], n)
      out.append((k, sample_count(k, n, n0)))
      n = k
    else:
      out.append((0, 0))
  return out


def score_assignment(attn, v):
  """`(sorted_scores, sorted_indices)` `[B, N - 1]`: eq. 4, ascending (`score_assignment_step`)."""
  b, _, n, _ = attn.shape
  v_norm = jnp.linalg.norm(v.transpose(0, 2, 1, 3).reshape(b, n, -1), axis=-1)
  scores = (attn[:, :, 0].sum(axis=1) * v_norm)[:, 1:]
  scores = scores / scores.sum(axis=1, keepdims=True)
  order = jnp.argsort(scores, axis=1)
  return jnp.take_along_axis(scores, order, axis=1), order


def create_ys(normalized_cdf, samples: int):
  """`[B, samples]` evenly spaced y values from the smallest non-zero CDF value to 1 (`create_ys`)."""
  lin = jnp.linspace(0.0, 1.0, samples, dtype=normalized_cdf.dtype)[None]
  start = jnp.min(normalized_cdf + (normalized_cdf == 0).astype(normalized_cdf.dtype) * 1e8, axis=1,
                  keepdims=True)
  steps = jnp.arange(samples, dtype=normalized_cdf.dtype)[None]
  return start + ((lin * (samples - 1)) - start * steps) / (samples - 1)


def unique_indices(indices, max_value: int):
  """Sorted indices with each repeat but the last of a run set to `max_value` (padding), then sorted again."""
  s = jnp.sort(indices, axis=1)
  shift_left = jnp.pad(s[:, 1:], ((0, 0), (0, 1)), constant_values=1)
  return jnp.sort(jnp.where(shift_left - s == 0, max_value, s), axis=1)


def sample_tokens(sorted_scores, samples: int, k: int):
  """`[B, K - 1]` positions in the score order (N - 1 = padding), by inverse-transform sampling (eq. 5-6)."""
  n1 = sorted_scores.shape[1]
  cdf = jnp.cumsum(sorted_scores, axis=1)
  lo, hi = cdf.min(axis=1, keepdims=True), cdf.max(axis=1, keepdims=True)
  ncdf = (cdf - lo) / (hi - lo)
  ys = create_ys(ncdf, samples)
  diff = samples - n1
  ref = jnp.pad(ncdf, ((0, 0), (diff, 0))) if diff >= 0 else ncdf[:, -diff:]
  picked = jnp.argmin(jnp.abs(ys[:, :, None] - ref[:, None, :]), axis=2) - diff
  return unique_indices(picked, n1)[:, :n1][:, :k - 1]


def gather_sampled(attn, raw_x, order, picked):
  """Sampled attention rows `[B, H, K, N]`, raw tokens `[B, K, C]` and policy `[B, K]` (class token first)."""
  b, h, n, _ = attn.shape
  rows = jnp.take_along_axis(attn[:, :, 1:], order[:, None, :, None], axis=2)
  rows = jnp.pad(rows, ((0, 0), (0, 0), (0, 1), (0, 0)))
  rows = jnp.take_along_axis(rows, picked[:, None, :, None], axis=2)
  tokens = jnp.pad(jnp.take_along_axis(raw_x[:, 1:], order[..., None], axis=1), ((0, 0), (0, 1), (0, 0)))
  tokens = jnp.take_along_axis(tokens, picked[..., None], axis=1)
  policy = jnp.pad((picked != n - 1).astype(raw_x.dtype), ((0, 0), (1, 0)), constant_values=1)
  return (jnp.concatenate([attn[:, :, :1], rows], axis=2), jnp.concatenate([raw_x[:, :1], tokens], axis=1),
          policy)


class AdaptiveTokenSampler(nn.Module):
  """The ATS attention (`AdaptiveTokenSampler`): timm's `qkv` / `proj` parameters, so a plain ViT's load.

  `(y, selected_x, policy, aux)` on the normed tokens `x` `[B, N, C]`, the raw ones `raw_x` and the incoming
  `policy` `[B, N]` (None: all kept); `y` and `selected_x` are `[B, K, C]`. `aux` holds `sampled` `[B, K - 1]`:
  the input index of each sampled token (0 = the class token, -1 = padding).
  """
  num_heads: int
  tokens: int  # K
  samples: int  # y values
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, raw_x, policy=None, *, train: bool = False):
    b, n, dim = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    policy = jnp.ones((b, n), x.dtype) if policy is None else policy
    q, k, v = (t * policy[:, None, :, None].astype(t.dtype) for t in qkv_heads(x, self.num_heads, self.qkv_bias, **kw))
    logits = jnp.einsum("bhqd,bhkd->bhqk", q * jnp.asarray((dim // self.num_heads) ** -0.5, q.dtype), k)
    attn = _softmax_with_policy(logits.astype(jnp.float32), policy)
    sorted_scores, order = score_assignment(*(jax.lax.stop_gradient(t.astype(jnp.float32)) for t in (attn, v)))
    picked = sample_tokens(sorted_scores, self.samples, self.tokens)
    attn, selected, policy = gather_sampled(attn, raw_x, order, picked)
    attn = attn.astype(self.dtype)  # the official sampler has no attention dropout
    y = merge_heads(jnp.einsum("bhqk,bhkd->bhqd", attn, v), dim, **kw) * policy[..., None].astype(x.dtype)
    sampled = jnp.where(picked == n - 1, -1, jnp.take_along_axis(order, jnp.minimum(picked, n - 2), axis=1) + 1)
    y = nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)
    return y, selected, policy, dict(sampled=sampled, policy=policy)
