"""DynamicViT (Rao et al. 2021, arXiv:2106.02034), as `raoyongming/DynamicViT` `models/dyvit.py`
computes it: before each pruning block a light prediction module scores every patch token from its
own features and the mean of the kept ones (sec. 3.2, eq. 1-3).

- Training keeps every token: hard Gumbel-softmax decisions (straight-through), multiplied by the
  previous ones, mask the keys in every later block's attention ("attention masking", eq. 6).
- Inference really prunes: the top rho^s N patch tokens by predicted keep score go on, in score order.
Keep ratios rho, rho^2, rho^3 at blocks 3, 6, 9 (0-based) by default.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit import layers


def keep_counts(num_patches: int, keep_rate: float, stages: int) -> list[int]:
  """Patch tokens kept at each pruning stage: int(N rho^(s + 1)) (`main.py`'s KEEP_RATE)."""
  if not 0 < keep_rate <= 1:
    raise ValueError(f"reduction keep_rate={keep_rate}; accepted: (0, 1]")
  return [int(num_patches * keep_rate ** (s + 1)) for s in range(stages)]


class ScorePredictor(nn.Module):
  """DynamicViT's `PredictorLG`: LayerNorm - Linear - GELU, half the channels replaced by their mean over
  the kept tokens (global), then an MLP C -> C/2 -> C/4 -> 2 with GELUs and a log-softmax: per token
  `[log p(keep), log p(drop)]`."""

  @nn.compact
  def __call__(self, x, decision):
    c = x.shape[-1]
    dense = lambda features, name: layers.dense(features, ("embed", "mlp"), name=name)
    x = layers.gelu(dense(c, "in_proj")(nn.LayerNorm(1e-5, name="in_norm")(x)))
    local, glob = x[..., :c // 2], x[..., c // 2:]
    glob = jnp.sum(glob * decision, axis=1, keepdims=True) / jnp.sum(decision, axis=1, keepdims=True)
    x = jnp.concatenate([local, jnp.broadcast_to(glob, local.shape)], axis=-1)
    x = layers.gelu(dense(c // 2, "out_fc1")(x))
    x = layers.gelu(dense(c // 4, "out_fc2")(x))
    return jax.nn.log_softmax(dense(2, "out_fc3")(x).astype(jnp.float32), axis=-1)


def gumbel_keep(rng, log_probs):
  """Hard keep decisions `[B, N, 1]` from `F.gumbel_softmax(log_probs, hard=True)[..., 0:1]`: the one-hot
  argmax forward, the softmax's gradient backward (straight-through)."""
  soft = jax.nn.softmax(log_probs + jax.random.gumbel(rng, log_probs.shape), axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), 2, dtype=soft.dtype)
  return (hard - jax.lax.stop_gradient(soft) + soft)[..., 0:1]
