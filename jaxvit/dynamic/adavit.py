"""AdaViT (Meng et al., CVPR 2022, "AdaViT: Adaptive Vision Transformers for Efficient Image Recognition",
arXiv:2111.15668), masked (static shapes), as the official MengLcool/AdaViT computes it: `models/
ada_transformer_block.py` (`StepAdaBlock`, `AdaAttention`, `SimpleTokenSelect`, `BlockHeadSelect`,
`BlockLayerSelect`, `_gumbel_sigmoid`), `models/ada_t2t_vit.py` (`AdaStepT2T_ViT`) and `models/losses.py`
(`AdaLoss`) @ 9857f92, with the README's DeiT-S setting (`--ada-head --ada-layer --ada-token-with-mlp`).

- Decision network: per block, linear heads on the class token (before the block's LayerNorm) decide
  which attention heads (`head_select`, H logits) and which of the block's two residual branches, attention and
  MLP (`layer_select`, 2 logits: the paper's block usage) run, from block `keep_layers` (1) on; a linear head on
  every normalised patch token (`token_select`, 1 logit) decides which patches the block updates (the class
  token always). Decisions are Gumbel-sigmoids made hard at a threshold (0.5; 0.6 for tokens, the official
  `ada_token_threshold` default), straight-through: in training sigmoid((logits + g1 - g2) / tau), tau 5, at
  inference sigmoid(logits), no noise.
- Heads: a dropped head's queries, keys, values and output are zero (the official width selection of the
  `query` / `key` / `value` / `proj` weights), and the MLP's `fc1` sees only the channels of the kept heads
  (`width_select` on its input, the official `ada_head` without `v2`).
- Tokens: attention between a dropped token and any other is masked (-inf, the policy stopped: the official
  `ada_token_detach_attn`), the attention and MLP outputs of dropped tokens are zeroed; a dropped token keeps its
  value and may be used again by the next block.
- Blocks: the attention and MLP branches are scaled by their 0 / 1 decisions (no stochastic depth then).
- Usage loss (`AdaLoss`): |mean head decision - target| (over blocks that run a branch), |mean block
  decision - target|, (mean token decision - target)^2, each weighted (2, 2, 2; targets 0.5, `ada_main.py`'s
  defaults), plus optional diversity, entropy and minimal-usage terms (weights 0 by default there).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.dynamic.avit import DeiTBlockFields

TAU = 5.0  # the selectors' Gumbel temperature (every official selector keeps its default)
THRESHOLD = 0.5  # head and block decisions
TOKEN_THRESHOLD = 0.6  # token decisions (`AdaAttention(ada_token_threshold=0.6)`)


def logistic_noise(rng, shape):
  """g1 - g2 for two independent standard Gumbels: a standard logistic sample (the official draws both)."""
  return jax.random.logistic(rng, shape, jnp.float32)


def gumbel_sigmoid(logits, noise=None, tau: float = TAU, threshold: float = THRESHOLD):
  """The official `_gumbel_sigmoid(hard=True)`: y = sigmoid((logits + noise) / tau) in training (`noise` g1 - g2),
  sigmoid(logits) at inference (`noise` None); forward 1[y > threshold], gradient y's (straight-through)."""
  logits = logits.astype(jnp.float32)
  soft = jax.nn.sigmoid((logits + noise) / tau) if noise is not None else jax.nn.sigmoid(logits)
  return (soft > threshold).astype(jnp.float32) - jax.lax.stop_gradient(soft) + soft


def block_macs(n: int, dim: int, num_heads: int, mlp_hidden: int, *, heads=None, tokens=None, attention=1.0,
               mlp=1.0, select_heads=False, select_layers=False, select_tokens=False, token_mlp=True):
  """MACs a block executes given its decisions (fvcore's convention), per example: `heads` kept of `num_heads`,
  `tokens` kept of `n` (the class token included), `attention` / `mlp` 1 if that branch runs (numbers or `[B]`).

  The decision heads (H C and 2 C on the class token; the token head (n - 1) C, which needs LayerNorm 1 on every
  token), then on the kept t tokens and the kept width w = heads x head dim: q, k, v 3 t C w, QK^T and AV 2 t^2 w,
  proj t w C; LayerNorm 2 5 t C, `fc1` t w F (its input is the kept heads' channels), `fc2` t F C. Without token
  selection LayerNorm 1 runs on the n tokens when attention does.
  """
  w = (dim if heads is None else heads * (dim // num_heads)) if select_heads else dim
  t = (n if tokens is None else tokens) if select_tokens else n
  t_mlp = t if token_mlp else n
  cost = (num_heads * dim if select_heads else 0) + (2 * dim if select_layers else 0)
  attention, mlp = (attention, mlp) if select_layers else (1.0, 1.0)
  if select_tokens:  # LayerNorm 1 and the token head run if either branch reads the token decisions
    needed = attention + mlp * token_mlp - attention * mlp * token_mlp
    cost = cost + needed * (5 * n * dim + (n - 1) * dim)
  else:
    cost = cost + attention * 5 * n * dim
  cost = cost + attention * (3 * t * dim * w + 2 * t * t * w + t * w * dim)
  return cost + mlp * (5 * t_mlp * dim + t_mlp * w * mlp_hidden + t_mlp * mlp_hidden * dim)


class AdaBlock(DeiTBlockFields):
  """The official `StepAdaBlock`: a pre-norm ViT block (the ViT `Block`'s parameter names) with the decision heads
  `head_select`, `layer_select` (if `select_heads` / `select_layers`) and `token_select` (if `select_tokens`).
  Returns `(x, aux)`: the decisions and logits it made, and its MACs `macs` `[B]` (`block_macs`)."""
  select_heads: bool = False
  select_layers: bool = False
  select_tokens: bool = False
  token_mlp: bool = True  # token decisions mask the MLP too (`ada_token_with_mlp`)

  def _decide(self, name: str, x, features: int, threshold: float):
    logits = layers.dense(features, ("embed", None), name=name, dtype=self.dtype, param_dtype=self.param_dtype)(x)
    # the `gumbel` rng stream (the trainer's); a caller giving only `dropout` draws from that
    stream = "dropout" if self.train and not self.has_rng("gumbel") and self.has_rng("dropout") else "gumbel"
    noise = logistic_noise(self.make_rng(stream), logits.shape) if self.train else None
    return gumbel_sigmoid(logits, noise, TAU, threshold), logits.astype(jnp.float32)

  @nn.compact
  def __call__(self, x, drop_path_rate):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, n, dim = x.shape
    aux = {}
    policy = x[:, 0]  # the decision heads read the class token (`norm_policy` off)
    if self.select_layers:
      aux["layer_select"], aux["layer_logits"] = self._decide("layer_select", policy, 2, THRESHOLD)
    if self.select_heads:
      aux["head_select"], aux["head_logits"] = self._decide("head_select", policy, self.num_heads, THRESHOLD)
    normed = layers.layer_norm(self.norm_eps, name="norm1", **kw)(x)
    bias = None
    if self.select_tokens:
      patches, _ = self._decide("token_select", normed[:, 1:], 1, TOKEN_THRESHOLD)
      aux["token_select"] = tokens = jnp.concatenate([jnp.ones((b, 1), jnp.float32), patches[..., 0]], axis=1)
      keep = jax.lax.stop_gradient(tokens)
      allowed = keep[:, :, None] * keep[:, None, :] + jnp.eye(n, dtype=jnp.float32) > 0
      bias = jnp.where(allowed, 0.0, -jnp.inf)[:, None]  # [B, 1, N, N]: kept pairs, and each token to itself
    heads = aux.get("head_select")
    y, _ = layers.Attention(self.num_heads, self.qkv_bias, self.attn_drop_rate, self.proj_drop_rate, name="attn",
                            **kw)(normed, train=self.train, bias=bias, head_mask=heads)
    scale = lambda v, s: v * s.astype(v.dtype)  # noqa: E731
    if self.select_tokens:
      y = scale(y, tokens[..., None])
    layer = aux.get("layer_select")
    x = x + (scale(y, layer[:, 0, None, None]) if self.select_layers else
             layers.drop_path(self, y, drop_path_rate, train=self.train))
    hidden = layers.layer_norm(self.norm_eps, name="norm2", **kw)(x)
    if self.select_heads:  # fc1 reads the kept heads' channels only
      hidden = scale(hidden, jnp.repeat(heads, dim // self.num_heads, axis=1)[:, None, :])
    y = layers.Mlp(int(dim * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(hidden,
                                                                                               train=self.train)
    if self.select_tokens and self.token_mlp:
      y = scale(y, tokens[..., None])
    x = x + (scale(y, layer[:, 1, None, None]) if self.select_layers else
             layers.drop_path(self, y, drop_path_rate, train=self.train))
    values = jax.lax.stop_gradient
    aux["macs"] = block_macs(
        n, dim, self.num_heads, int(dim * self.mlp_ratio),
        heads=values(heads).sum(-1) if self.select_heads else None,
        tokens=values(tokens).sum(-1) if self.select_tokens else None,
        attention=values(layer[:, 0]) if self.select_layers else 1.0,
        mlp=values(layer[:, 1]) if self.select_layers else 1.0, select_heads=self.select_heads,
        select_layers=self.select_layers, select_tokens=self.select_tokens, token_mlp=self.token_mlp)
    return nn.with_logical_constraint(x, ("batch", "seq", "embed")), aux


class AdaEncoder(nn.Module):
  """`depth` AdaViT blocks (`blocks_0` ...): heads and blocks selected from block `keep_layers` on, tokens in every
  block. `(x, out)`: `out` holds `head_select` `[B, L, H]`, `layer_select` `[B, L, 2]` and their logits (L = depth -
  keep_layers), `token_select` `[B, depth, N]` (class token 1), `block_macs` `[B]` and `block{i}`."""
  depth: int
  block: dict
  drop_path_rate: float = 0.0
  keep_layers: int = 1
  select_heads: bool = True
  select_layers: bool = True
  select_tokens: bool = True
  remat: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, x):
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    block_cls = nn.remat(AdaBlock) if self.remat else AdaBlock
    out, per_block, macs = {}, {}, 0.0
    for i in range(self.depth):
      selects = dict(select_heads=self.select_heads and i >= self.keep_layers,
                     select_layers=self.select_layers and i >= self.keep_layers, select_tokens=self.select_tokens)
      x, aux = block_cls(train=self.train, name=f"blocks_{i}", **selects, **self.block)(x, float(rates[i]))
      out[f"block{i}"] = x
      macs = macs + aux.pop("macs")
      for key, value in aux.items():
        per_block.setdefault(key, []).append(value)
    out.update({key: jnp.stack(values, axis=1) for key, values in per_block.items()})
    out["block_macs"] = macs
    return x, out


def binary_entropy(p, eps: float = 1e-7):
  """The official `binaray_entropy`: -(p log p + (1 - p) log(1 - p)), logs clamped at eps."""
  return -(p * jnp.log(jnp.maximum(p, eps)) + (1 - p) * jnp.log(jnp.maximum(1 - p, eps)))


def _abs(x):
  """|x| with torch's gradient at 0 (0; `jnp.abs`'s is 1): a usage exactly at its target is common (decisions are
  discrete), and XLA's mean can land 1e-8 off it, so |x| <= 1e-6 counts as 0."""
  return x * jax.lax.stop_gradient(jnp.where(jnp.abs(x) > 1e-6, jnp.sign(x), 0.0))


def usage_terms(out, *, head_target: float = 0.5, layer_target: float = 0.5, token_target: float = 0.5,
                head_diverse: float = 0.0, layer_diverse: float = 0.0, head_entropy: float = 0.0,
                layer_entropy: float = 0.0, head_minimal: float = 0.0, head_minimal_weight: float = 0.0,
                layer_minimal: float = 0.0, layer_minimal_weight: float = 0.0, token_minimal: float = 0.0,
                token_minimal_weight: float = 0.0, eps: float = 1e-6) -> dict:
  """`AdaLoss`'s `head_loss`, `layer_loss` and `token_loss` (0 for a decision type the model does not make) from
  the decisions in `out` (`head_select` `[B, L, H]`, `layer_select` `[B, L, 2]`, `token_select` `[B, L, N]`)."""
  terms = {}
  f32 = lambda k: out[k].astype(jnp.float32)  # noqa: E731
  zero = jnp.zeros((), jnp.float32)
  if "layer_select" in out:
    layer = f32("layer_select")
    loss = _abs(layer.mean() - layer_target)
    if layer_diverse:
      loss = loss + layer_diverse * _abs(layer.mean((0, 2)) - layer_target).mean()
    if layer_entropy:
      loss = loss - layer_entropy * binary_entropy(jax.nn.sigmoid(f32("layer_logits"))).mean()
    if layer_minimal_weight:
      loss = loss + layer_minimal_weight * jnp.maximum(layer_minimal - layer.mean(0), 0.0).sum()
    terms["layer_loss"] = loss
  if "head_select" in out:
    head = f32("head_select")
    mask = jnp.ones_like(head)
    if "layer_select" in out:  # only blocks that run a branch count
      mask = jnp.broadcast_to((jax.lax.stop_gradient(f32("layer_select")).sum(-1, keepdims=True) > 0), head.shape)
      mask = mask.astype(jnp.float32)
    loss = _abs((head * mask).sum() / (mask.sum() + eps) - head_target)
    per_head = (head * mask).sum(0) / (mask.sum(0) + eps)  # [L, H]
    if head_diverse:
      loss = loss + head_diverse * _abs(per_head - head_target).mean()
    if head_minimal_weight:
      loss = loss + head_minimal_weight * jnp.maximum(head_minimal - per_head, 0.0).sum()
    if head_entropy:
      loss = loss - head_entropy * binary_entropy(jax.nn.sigmoid(f32("head_logits"))).mean()
    terms["head_loss"] = loss
  if "token_select" in out:
    token = f32("token_select")
    loss = (token.mean() - token_target) ** 2
    if token_minimal_weight:
      loss = loss + token_minimal_weight * jnp.maximum(token_minimal - token.mean(-1), 0.0).sum()
    terms["token_loss"] = loss
  return {k: terms.get(k, zero) for k in ("head_loss", "layer_loss", "token_loss")}


def usage_loss(base_loss, model, *, head_weight: float = 2.0, layer_weight: float = 2.0, token_weight: float = 2.0,
               **terms):
  """`loss_fn(logits, out, batch, loss_params)`: base loss + head_weight x head loss + layer_weight x layer loss +
  token_weight x token loss (`usage_terms`, whose keyword arguments `terms` takes: targets, diversity, entropy,
  minimal usage). Metrics add the three terms and the kept fractions `head_usage`, `block_usage`, `token_usage`."""
  unknown = sorted(set(terms) - set(usage_terms.__kwdefaults__))
  if unknown:
    raise ValueError(f"AdaViT usage loss: unknown {unknown}; accepted: head_weight, layer_weight, token_weight, "
                     f"{', '.join(usage_terms.__kwdefaults__)}")

  def loss_fn(logits, out, batch, loss_params=None):
    total, metrics = base_loss(logits, out, batch, loss_params)
    parts = usage_terms(out, **terms)
    total = total + head_weight * parts["head_loss"] + layer_weight * parts["layer_loss"] + \
        token_weight * parts["token_loss"]
    metrics = dict(metrics, **parts)
    for key, name in (("head_select", "head_usage"), ("layer_select", "block_usage"), ("token_select", "token_usage")):
      if key in out:
        metrics[name] = jnp.mean(out[key].astype(jnp.float32))
    return total, metrics
  return loss_fn
