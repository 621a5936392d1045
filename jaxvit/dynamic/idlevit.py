"""IdleViT: dynamic token idling (Xu et al., "No Token Left Behind: Efficient Vision Transformer via Dynamic Token
Idling" / "IdleViT: Efficient Vision Transformer via Token Idle and Token Cut Loss", AJCAI 2023, arXiv:2310.05654),
as the official Ackesnal/IdleViT computes it: `vit.py` (`Attention.forward` with `test=True`, `Block.forward`,
`IdleVisionTransformer`), `losses.py` (`IdleViTTotalLoss`) and `main.py` (the DeiT schedule) @ d46c1c2.

- Token idling: at each idle block the class token's attention logits to the patches, q_cls . k_j
  averaged over heads with that block's own norm1 and qkv weights, rank the patches; the class token and the top K
  run the block (attention among them only), the other tokens pass unchanged ("idle") and may be selected again
  later: the full token set is kept. Here the head average is computed as u . LN(x_j) with
  u = (1/H) sum_h W_k,h^T q_cls,h (the key bias adds the same constant to every patch, so the ranking is the
  official one) at 2 C^2 + N C MACs, where the official inference path projects every key (N C^2 more per block).
  Training runs the same gather-scatter: the official masked training (idle keys at -1e5, idle updates zeroed)
  gives the same values and gradients.
- Schedule (`main.py`, DeiT-S/B): blocks 4..11 idle, keep ratio rho^(s+1) in stage s of three blocks each
  (K = int(N rho^(s+1)): 137, 96, 67 of DeiT-S's 196 patches at rho = 0.7); here stages of ceil(L / 3) of the L
  idle blocks (3 of 8; the official LV-ViT-S / -M use 4 of 12, 5 of 15).
- Token cut loss ("inspired by the normalized graph cut"), per idle block on W = softmax over keys of the
  head-averaged pre-softmax attention logits of all tokens, m the selected (1) / idle (0) mask with the class
  token selected: inter = mean_i (sum_{j>0} |m_i - m_j| W_ij)^2 (the cut between the two sets; the class token's
  column is not counted), intra = mean_i (sum_j m_i m_j W_ij - m_i)^2 (the selected set's association);
  loss = cut_weight x sum over idle blocks / their number (`--cutw` 20, `cutloss_type="both"`). The official loop
  deletes list entries while enumerating them, so it adds blocks 4, 6, 8 and 10 only (still divided by 8); here
  every idle block counts (each block's term equals the official one). The training
  forward puts `idle_mask{i}` `[B, N]` and `idle_attn{i}` `[B, N, N]` in `out` (only a loss that reads them pays
  for them under jit); `cut_loss` is `config.dynamic_loss = dict(kind="idlevit", cut_weight=20.0)`.

`reduction=dict(kind="idlevit", keep_rate=0.7, locations=(4, ..., 11))` on a ViT with one prefix token, the class
token. The official recipe also distils from the unpruned DeiT (logits KL x `--distillw` and the class token's
features x 100 `--distillw`); that is `config.distill`'s business.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import layer_norm

CUT_TYPES = ("both", "inter", "intra")


def default_locations(depth: int) -> tuple:
  """The official idle blocks: 4..11 of DeiT's 12 (the last two thirds)."""
  return tuple(range(depth // 3, depth))


def keep_counts(num_patches: int, keep_rate: float, num_locations: int) -> list[int]:
  """Patches each idle block selects: int(N rho^(s + 1)), stage s of ceil(L / 3) blocks (`main.py`'s keep_ratios)."""
  per_stage = max(math.ceil(num_locations / 3), 1)
  return [int(num_patches * keep_rate ** (j // per_stage + 1)) for j in range(num_locations)]


def plan(model, cfg: dict) -> dict:
  """The encoder's IdleViT plan: `keep` {block: patches selected} (blocks keeping every patch are left out: they
  run as plain blocks), `locations`; a ValueError names the key otherwise."""
  owner = type(model).__name__
  keep_rate = cfg.get("keep_rate", 0.7)
  locations = tuple(cfg.get("locations", default_locations(model.depth)))
  if any(not isinstance(i, int) or not 0 <= i < model.depth for i in locations) or \
      list(locations) != sorted(set(locations)):
    raise ValueError(f"{owner}: reduction locations={locations}; accepted: increasing blocks 0..{model.depth - 1}")
  if not isinstance(keep_rate, (int, float)) or not 0 < keep_rate <= 1:
    raise ValueError(f"{owner}: reduction keep_rate={keep_rate!r}; accepted: (0, 1]")
  patches = model.grid[0] * model.grid[1]
  counts = keep_counts(patches, float(keep_rate), len(locations))
  if counts and min(counts) < 1:
    raise ValueError(f"{owner}: reduction keep_rate={keep_rate} selects no patch at block "
                     f"{locations[counts.index(min(counts))]} of {patches} patches; accepted: a larger keep_rate")
  return dict(kind="idlevit", locations=locations, blocks=({},) * model.depth,
              keep={i: k for i, k in zip(locations, counts) if k < patches})


def class_scores(block_params, x, num_heads: int, eps: float = 1e-6):
  """`[B, N - 1]` the class token's attention logits to the other tokens averaged over heads, up to one constant
  per image (u . LN(x_j), see the module docstring), from a ViT `Block`'s `norm1` and `attn/qkv` parameters."""
  p = nn.meta.unbox(block_params)
  normed = layer_norm(eps).apply({"params": p["norm1"]}, x.astype(jnp.float32))  # [B, N, C]
  kernel = p["attn"]["qkv"]["kernel"].astype(jnp.float32)  # [C, 3, H, d]
  q_cls = jnp.einsum("bc,chd->bhd", normed[:, 0], kernel[:, 0])
  if "bias" in p["attn"]["qkv"]:
    q_cls = q_cls + p["attn"]["qkv"]["bias"][0].astype(jnp.float32)
  u = jnp.einsum("bhd,chd->bc", q_cls, kernel[:, 1]) / num_heads
  return jnp.einsum("bnc,bc->bn", normed[:, 1:], u)


def attention_logits(block_params, x, num_heads: int, eps: float = 1e-6):
  """`[B, N, N]` a `Block`'s pre-softmax attention logits q_i . k_j / sqrt(d) averaged over heads (the official
  `attn_rt.mean(1)`), every token as query and key; differentiable, for the token cut loss."""
  p = nn.meta.unbox(block_params)
  normed = layer_norm(eps).apply({"params": p["norm1"]}, x)
  kernel = p["attn"]["qkv"]["kernel"]  # [C, 3, H, d]
  qk = jnp.einsum("bnc,cthd->tbhnd", normed, kernel[:, :2].astype(normed.dtype))
  if "bias" in p["attn"]["qkv"]:
    qk = qk + p["attn"]["qkv"]["bias"][:2, None, :, None, :].astype(qk.dtype)
  logits = jnp.einsum("bhqd,bhkd->bqk", qk[0] * (qk.shape[-1] ** -0.5), qk[1]).astype(jnp.float32)
  return logits / num_heads


def idle_block(encoder, block, x, drop_path_rate: float, keep: int, name: str, num_heads: int, eps: float = 1e-6):
  """Runs `block` (the encoder's submodule `name`) on the class token and the `keep` patches of highest class
  attention, the others idle: `(x` with the selected tokens updated, `aux)`; `aux` adds `idle_kept` `[B, keep]`
  (patch indices, best first) and, in training, `idle_mask` and `idle_attn` for the token cut loss."""
  initializing = encoder.is_initializing()  # the block's parameters do not exist yet: any selection will do
  params = None if initializing else encoder.variables["params"][name]
  scores = jnp.zeros(x.shape[:2], jnp.float32)[:, 1:] if initializing else \
      jax.lax.stop_gradient(class_scores(params, x, num_heads, eps))
  _, kept = jax.lax.top_k(scores, keep)  # [B, K], as the official descending argsort
  index = jnp.concatenate([jnp.zeros_like(kept[:, :1]), kept + 1], axis=1)  # the class token first
  selected = jnp.take_along_axis(x, index[..., None], axis=1)  # [B, N, C] -> [B, K + 1, C]
  y, aux = block(selected, drop_path_rate)
  rows = jnp.arange(x.shape[0])[:, None]
  aux = dict(aux, idle_kept=kept)
  if encoder.train and not initializing:  # the block's attention over all its input tokens, for the cut loss
    aux["idle_mask"] = jnp.zeros(x.shape[:2], jnp.float32).at[rows, index].set(1.0)
    aux["idle_attn"] = attention_logits(params, x, num_heads, eps)
  x = x.at[rows, index].set(y)  # [B, N, C]: the idle tokens unchanged
  return x, dict(aux, tokens=x)


def token_cut_loss(attn_logits, mask, cut_type: str = "both"):
  """One block's token cut loss (`IdleViTTotalLoss`): `attn_logits` `[B, N, N]` head-averaged, `mask` `[B, N]` 1 for
  the selected tokens (class token included). W = softmax(logits); inter = mean (sum_j |m_i - m_j| W_ij, the class
  token's column left out)^2, intra = mean (sum_j m_i m_j W_ij - m_i)^2; `cut_type` both, inter or intra."""
  if cut_type not in CUT_TYPES:
    raise ValueError(f"token cut loss cut_type={cut_type!r}; accepted: {CUT_TYPES}")
  w = jax.nn.softmax(attn_logits.astype(jnp.float32), axis=-1)
  m = mask.astype(jnp.float32)
  loss = 0.0
  if cut_type in ("both", "inter"):
    diff = jnp.abs(m[:, :, None] - m[:, None, :]).at[:, :, 0].set(0.0)
    loss = loss + jnp.mean(jnp.sum(diff * w, axis=-1) ** 2)
  if cut_type in ("both", "intra"):
    loss = loss + jnp.mean((jnp.sum(m[:, :, None] * m[:, None, :] * w, axis=-1) - m) ** 2)
  return loss


def cut_loss(base_loss, model, *, cut_weight: float = 20.0, cut_type: str = "both"):
  """`loss_fn(logits, out, batch, loss_params)`: base loss + cut_weight x the token cut loss summed over the idle
  blocks / their number (official `--cutw` 20, `--cutloss_type both`). Metrics add `cut_loss`."""
  from jaxvit.dynamic import reduction  # the model's plan (circular at import time)
  if cut_type not in CUT_TYPES:
    raise ValueError(f"config.dynamic_loss cut_type={cut_type!r}; accepted: {CUT_TYPES}")
  blocks = tuple(reduction.encoder_reduction(model)["keep"])

  def loss_fn(logits, out, batch, loss_params=None):
    total, metrics = base_loss(logits, out, batch, loss_params)
    if not blocks:
      return total, dict(metrics, cut_loss=jnp.zeros((), jnp.float32))
    cut = sum(token_cut_loss(out[f"idle_attn{i}"], out[f"idle_mask{i}"], cut_type) for i in blocks) / len(blocks)
    return total + cut_weight * cut, dict(metrics, cut_loss=cut)
  return loss_fn

