"""A-ViT: adaptive tokens (Yin et al., CVPR 2022, "A-ViT: Adaptive Tokens for Efficient Vision Transformer",
arXiv:2112.07658), masked (static shapes), as the official NVlabs/A-ViT computes it: `timm/models/
act_vision_transformer.py` (`Block_ACT.forward_act`, `VisionTransformer.forward_features_act_token`),
`engine_act.py` (the losses) and `utils.py` (`get_distribution_target`) @ 120c9cb.

- Halting score: h_k^l = sigmoid(gate_scale * t_{k,0}^l - gate_center), the first embedding channel of token k
  after block l: no extra parameters. The last block sets h = 1 for every token.
- Adaptive computation time per token: c_k += h_k; a token whose c_k passes 1 - eps (eps = 0.01) halts after adding
  its remainder r_k = 1 - (its earlier h) times its output to the ACT output; until then it adds h_k times its
  output and r_k -= h_k. The class token is read from the ACT output (the paper's mean-field class token); the
  official code halts it like any other token (`halt_class_token=False` keeps it running to the last block).
- Masking: halted tokens are zeroed at each block's input (their value only, the gradient passes, as the official
  `out.data *= mask`), their LayerNorm inputs and outputs are masked, and their keys get a -1000 bias in every later
  attention. Nothing is removed: timing equals DeiT's (the official "token zipping" was never released); the MACs
  an execution without the halted tokens would spend are `out["macs"]`.
- Ponder loss: mean over tokens of rho_k = blocks run + remainder, times `ponder_weight` (official
  `--ponder_token_scale`; README 5e-4). Distributional prior: KL(target || per-block mean halting score, normalised
  and clamped to [0.01, 0.99]) / depth (`nn.KLDivLoss(reduction="batchmean")` on a 1-D input), the target a
  Gaussian over blocks (mean `target_depth`, sd 1) scaled so that its first `target_depth` entries sum to 0.98,
  times `distr_prior_weight` (README 0.001; `main_act.py`'s default is 0.01).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit import layers

EPS = 0.01  # the official `self.eps`: a token halts once its cumulative halting score passes 1 - EPS
MASK_BIAS = -1000.0  # the official `masked_softmax_bias` on halted tokens' keys


def halting_score(x, gate_scale: float, gate_center: float):
  """`[B, N]` h = sigmoid(gate_scale * x[..., 0] - gate_center), float32."""
  return jax.nn.sigmoid(x[..., 0].astype(jnp.float32) * gate_scale - gate_center)


def block_macs(tokens, dim: int, mlp_hidden: int):
  """MACs of a pre-norm ViT block on `tokens` tokens (a number or an array), as fvcore counts them: the linear
  layers per token (qkv 3 C^2, proj C^2, MLP 2 C F), QK^T and AV (2 n^2 C), the two LayerNorms (5 C per token)."""
  return tokens * (4 * dim * dim + 2 * dim * mlp_hidden + 10 * dim) + 2 * tokens * tokens * dim


class DeiTBlockFields(nn.Module):
  """The fields of DeiT's plain pre-norm block (the ViT `Block`'s) that A-ViT's and AdaViT's blocks take."""
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  train: bool = False
  norm_eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32


class HaltingBlock(DeiTBlockFields):
  """The official `Block_ACT.forward_act`: a pre-norm block whose halted tokens (`keep` 0) are masked before and
  after each LayerNorm and as attention keys (-1000 bias). Parameter names are the ViT `Block`'s."""

  @nn.compact
  def __call__(self, x, keep, drop_path_rate):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    m = keep[..., None].astype(x.dtype)
    y, _ = layers.Attention(self.num_heads, self.qkv_bias, self.attn_drop_rate, self.proj_drop_rate, name="attn",
                            **kw)(layers.layer_norm(self.norm_eps, name="norm1", **kw)(x * m) * m, train=self.train,
                                  bias=(1.0 - keep) * MASK_BIAS)
    x = x + layers.drop_path(self, y, drop_path_rate, train=self.train)
    y = layers.Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(
        layers.layer_norm(self.norm_eps, name="norm2", **kw)(x * m) * m, train=self.train)
    x = x + layers.drop_path(self, y, drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", "seq", "embed"))


class ACTEncoder(nn.Module):
  """`depth` halting blocks (`blocks_0` ...) with per-token adaptive computation time; the official
  `forward_features_act_token` loop. Returns `(ACT output [B, N, C], out)`: `out["ponder"]` rho `[B, N]` (blocks
  run + remainder), `out["token_depth"]` `[B, N]` (blocks each token ran, the official `counter_token`),
  `out["halting_mean"]` `[B, depth]` (each block's halting score averaged over the tokens, before the last block's
  is set to 1), `out["block_macs"]` `[B]` (the blocks' MACs on the tokens still running) and `block{i}`."""
  depth: int
  block: dict
  drop_path_rate: float = 0.0
  gate_scale: float = 10.0
  gate_center: float = 30.0
  halt_class_token: bool = True
  remat: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, x):
    b, n, dim = x.shape
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    block_cls = nn.remat(HaltingBlock) if self.remat else HaltingBlock
    f32 = lambda v: jnp.full((b, n), v, jnp.float32)  # noqa: E731
    cumulative, remainder, keep, rho, counter = f32(0.0), f32(1.0), f32(1.0), f32(0.0), f32(1.0)
    output, out, halting, macs = jnp.zeros_like(x), {}, [], 0.0
    hidden = int(dim * self.block.get("mlp_ratio", 4.0))
    for i in range(self.depth):
      macs = macs + block_macs(keep.sum(-1), dim, hidden)
      x = x + jax.lax.stop_gradient(x * keep[..., None].astype(x.dtype) - x)  # official `out.data *= mask`
      x = block_cls(train=self.train, name=f"blocks_{i}", **self.block)(x, keep, float(rates[i]))
      out[f"block{i}"] = x
      h = halting_score(x, self.gate_scale, self.gate_center)
      if not self.halt_class_token:
        h = h.at[:, 0].set(0.0)
      halting.append(h.mean(-1))
      if i == self.depth - 1:
        h = jnp.ones_like(h)
      cumulative = cumulative + h
      rho = rho + keep
      reached = (cumulative > 1 - EPS).astype(jnp.float32) * keep  # halts here: adds its remainder
      running = (cumulative < 1 - EPS).astype(jnp.float32)  # goes on: adds h
      rho = rho + remainder * reached
      weight = remainder * reached + h * running
      output = output + x * keep[..., None].astype(x.dtype) * weight[..., None].astype(x.dtype)
      remainder = remainder - running * h
      counter = counter + running
      keep = running
    out.update(ponder=rho, token_depth=counter, halting_mean=jnp.stack(halting, axis=1), block_macs=macs)
    return output, out


def distribution_target(depth: int, target_depth: int, buffer: float = 0.02) -> np.ndarray:
  """The official `get_distribution_target(mode="gaussian", standardized=True)`: N(target_depth, 1)'s density at
  blocks 0 .. depth - 1, scaled so that its first `target_depth` entries sum to 1 - buffer."""
  if not 0 < target_depth <= depth:
    raise ValueError(f"A-ViT target_depth={target_depth}; accepted: an int in 1..depth={depth}")
  blocks = np.arange(depth, dtype=np.float64)
  density = np.exp(-0.5 * (blocks - target_depth) ** 2) / np.sqrt(2 * np.pi)
  return density * (1.0 - buffer) / density[:target_depth].sum()


def ponder_loss(ponder):
  """The ponder loss without its weight: rho averaged over examples and tokens (`torch.mean(model.rho_token)`)."""
  return jnp.mean(ponder.astype(jnp.float32))


def distr_prior_loss(halting_mean, target):
  """The distributional prior without its weight, as `engine_act.py`: the per-block halting scores averaged over the batch `[depth]`
  (here every example; the official averages `h[1:]`, all but the batch's first example), normalised to sum 1,
  clamped to [0.01, 0.99]; `nn.KLDivLoss(reduction="batchmean")(log p, target)` = sum target (log target - log p)
  / depth."""
  p = halting_mean.astype(jnp.float32).mean(0) if halting_mean.ndim == 2 else halting_mean.astype(jnp.float32)
  p = jnp.clip(p / jnp.sum(p), 0.01, 0.99)
  target = jnp.asarray(target, jnp.float32)
  return jnp.sum(target * (jnp.log(target) - jnp.log(p))) / p.shape[0]


def act_loss(base_loss, model, *, ponder_weight: float = 5e-4, distr_prior_weight: float = 1e-3,
             target_depth: int | None = None):
  """`loss_fn(logits, out, batch, loss_params)`: base loss + ponder_weight x ponder loss + distr_prior_weight x
  distributional prior (README's ImageNet recipe: 5e-4 and 0.001; `target_depth` None: 2/3 of the depth, the
  official 8 of 12). Metrics add `ponder_loss`, `distr_prior_loss` and `token_depth` (blocks a token ran, mean)."""
  target = distribution_target(model.depth, 2 * model.depth // 3 if target_depth is None else int(target_depth))

  def loss_fn(logits, out, batch, loss_params=None):
    total, metrics = base_loss(logits, out, batch, loss_params)
    ponder, prior = ponder_loss(out["ponder"]), distr_prior_loss(out["halting_mean"], target)
    total = total + ponder_weight * ponder + (distr_prior_weight * prior if distr_prior_weight else 0.0)
    metrics = dict(metrics, ponder_loss=ponder, distr_prior_loss=prior, token_depth=jnp.mean(out["token_depth"]))
    return total, metrics
  return loss_fn

