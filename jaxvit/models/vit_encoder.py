"""The ViT's pre-norm transformer `Block` and the `Encoder` stack that runs it, with the per-block token reductions of
`jaxvit.dynamic` (ToMe, ToFu, EViT, DynamicViT, ATS, PatchMerger, Evo-ViT, IdleViT, TCFormer) wired between blocks."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.dynamic import ats, dynamicvit, evit, evo_vit, idlevit, patch_merger, tcformer, tofu, tome
from jaxvit.layers.fire import Fire
from jaxvit.layers.lrpe import Lrpe, apply_lrpe
from jaxvit.layers.peg import PosConv
from jaxvit.layers.token_mixer import TokenMixer


class Block(nn.Module):
  """Pre-norm transformer block: x + DropPath(LS(MHSA(LN(x)))), then the same with the MLP."""
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  init_values: Optional[float] = None
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  return_attention: bool = False
  train: bool = False
  norm_eps: float = 1e-6
  merge_r: int = 0  # ToMe: tokens merged between attention and MLP (jaxvit.dynamic.tome)
  merge_mode: str = ""  # ToFu: "prune" or "mlerp" instead of ToMe's average (jaxvit.dynamic.tofu)
  prop_attn: bool = False  # ToMe's proportional attention: log(token size) added to the logits
  protected: tuple = (True, False)  # (class token, distillation token): never merged
  keep_tokens: int = 0  # EViT: non-class tokens kept between attention and MLP (jaxvit.dynamic.evit)
  fuse_token: bool = False  # EViT: the others fused into one token
  cls_attention: bool = False  # Evo-ViT: the class token's head-averaged attention in aux["cls_attn"]
  ats_tokens: int = 0  # ATS: tokens out of this block, K (jaxvit.dynamic.ats); ats_samples: its y values
  ats_samples: int = 0
  rope: str = ""  # rotary position embedding of the patches' queries and keys: "", or one of layers.ROPES
  rope_theta: float = 100.0
  grid: tuple = ()  # the patch grid (h, w) RoPE rotates by and grid mixers mix over
  lrpe: bool = False  # LRPE's unitary turn of the patches' queries and keys (jaxvit.layers.lrpe; base rope_theta)
  fire: bool = False  # FIRE's learned relative bias on the attention logits (jaxvit.layers.fire)
  peg: bool = False  # CPVT's PEG (x + DWConv3x3 on the patch grid) after the block (jaxvit.layers.peg)
  mixer: str = "attention"  # the token mixer, one of MIXERS
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate, size=None, source=None, policy=None):
    """`(x, aux)`; with token merging, `size` `[B, N, 1]` (and `source` `[B, N, N0]`) come in and leave in
    `aux`; `policy` `[B, N]` masks attention keys (DynamicViT's training)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bias = jnp.log(size[..., 0]) if self.prop_attn and size is not None else None
    if self.ats_tokens:
      attention = ats.AdaptiveTokenSampler(self.num_heads, self.ats_tokens, self.ats_samples, self.qkv_bias,
                                           self.proj_drop_rate, name="attn", **kw)
    else:
      attention = layers.Attention(self.num_heads, self.qkv_bias, self.attn_drop_rate, self.proj_drop_rate,
                                   self.return_attention, self.merge_r > 0, self.keep_tokens > 0 or self.cls_attention,
                                   name="attn", **kw)
    rope = layers.RotaryEmbedding(self.rope, self.grid, self.num_heads, x.shape[-1] // self.num_heads,
                                  self.rope_theta, self.param_dtype, name="rope")() if self.rope else None
    if self.lrpe:
      sin, cos = Lrpe(self.grid, self.num_heads, x.shape[-1] // self.num_heads, self.rope_theta, self.param_dtype,
                      name="lrpe")()
      rope = lambda t: apply_lrpe(t, sin, cos)  # noqa: E731
    if self.fire:
      fire = Fire(self.num_heads, self.grid, name="fire", **kw)(x.shape[1])  # [1, H, N, N]
      bias = fire if bias is None else bias[:, None, None, :] + fire
    normed = layers.layer_norm(self.norm_eps, name="norm1", **kw)(x)
    if self.ats_tokens:
      y, x, policy, aux = attention(normed, x, policy, train=self.train)  # x: the sampled raw tokens
    elif self.mixer == "attention":
      y, aux = attention(normed, train=self.train, bias=bias, policy=policy, rope=rope)
    else:
      y, aux = TokenMixer(self.mixer, self.grid, self.num_heads, self.proj_drop_rate, name="token_mixer", **kw)(
          normed, train=self.train), {}
    if self.init_values is not None:
      y = layers.LayerScale(self.init_values, self.param_dtype, name="ls1")(y)
    x = x + layers.drop_path(self, y, drop_path_rate, train=self.train)
    if size is not None and self.merge_r > 0:
      merge = tome.bipartite_soft_matching(aux["keys"], self.merge_r, *self.protected)
      if source is not None:
        aux["source"] = source = tome.merge_source(merge, source)
      x, size = tofu.fuse(merge, x, size, self.merge_mode, self.protected[1]) if self.merge_mode else \
          tome.merge_wavg(merge, x, size)
      aux["size"] = size
    if self.keep_tokens:
      x, aux["kept"] = evit.keep_attentive(x, aux["cls_attn"], self.keep_tokens, self.fuse_token)
    y = layers.Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(
        layers.layer_norm(self.norm_eps, name="norm2", **kw)(x), train=self.train)
    if self.init_values is not None:
      y = layers.LayerScale(self.init_values, self.param_dtype, name="ls2")(y)
    x = x + layers.drop_path(self, y, drop_path_rate, train=self.train)
    if self.peg:  # CPVT (arXiv:2102.10882, sec. 3.2, Fig. 1b): the patch grid through PEG, prefix tokens as they are
      h, w = self.grid
      patches = PosConv(name="pos_block", **kw)(x[:, x.shape[1] - h * w:].reshape(x.shape[0], h, w, x.shape[-1]))
      x = jnp.concatenate([x[:, :x.shape[1] - h * w], patches.reshape(x.shape[0], h * w, x.shape[-1])], axis=1)
    x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
    return x, dict(tokens=x, **aux)


class Encoder(nn.Module):
  """`depth` blocks with stochastic depth rising linearly to `drop_path_rate`.

  `scan=True` stacks the blocks' parameters along a leading `layers` axis (param `blocks`) and
  compiles one block; `remat=True` recomputes activations in the backward pass. Without scan the
  blocks are `blocks_0 ... blocks_{depth-1}`.
  """
  depth: int
  block: dict
  drop_path_rate: float = 0.0
  scan: bool = False
  remat: bool = False
  train: bool = False
  reduction: Optional[dict] = None  # token reduction: kind, per-block `Block` fields ("blocks"), trace_source
  span: Optional[tuple] = None  # (lo, hi): run only blocks lo .. hi - 1 (the staged early-exit path; loop layout)
  block_fields: tuple = ()  # per-block `Block` fields the model sets on some blocks: ({}, ...) of length depth or ()

  @nn.compact
  def __call__(self, x):
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    block_cls = nn.remat(Block) if self.remat else Block
    out = {}
    if self.scan:
      stack = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True,
                                                                          "drop_path": True},
                      length=self.depth, metadata_params={nn.PARTITION_NAME: "layers"})
      x, per_layer = stack(train=self.train, name="blocks", **self.block)(x, jnp.asarray(rates, jnp.float32))
      for key, stacked in per_layer.items():
        for i in range(self.depth):
          out[f"{'block' if key == 'tokens' else key}{i}"] = stacked[i]
    else:
      size = source = None
      red = self.reduction or {}
      if red.get("kind") in ("tome", "tofu"):
        size = jnp.ones(x.shape[:2] + (1,), x.dtype)
        source = jnp.broadcast_to(jnp.eye(x.shape[1], dtype=x.dtype), (x.shape[0],) + (x.shape[1],) * 2) \
            if red.get("trace_source") else None
      policy = decision = None
      if red.get("kind") == "dynamicvit":
        decision = jnp.ones(x.shape[:2] + (1,), x.dtype)[:, 1:]  # kept patch tokens (prev_decision)
        policy = jnp.ones(x.shape[:2], x.dtype) if self.train else None
      ranking = placeholders = None  # Evo-ViT's global class attention and waiting tokens
      for i in range(*(self.span or (0, self.depth))):
        if red.get("kind") == "evo_vit" and i in red["starts"]:
          x, placeholders, ranking = evo_vit.select(x, ranking, red["starts"][i])
        if red.get("kind") == "patch_merger" and i == red["location"]:
          x = patch_merger.PatchMerger(red["tokens"], name="patch_merger")(x)
        if red.get("kind") == "tcformer" and i == red["location"]:  # [B, P + N, C] -> [B, P + M, C]
          ctm = tcformer.ClusterMerge(red["tokens"], red["k"], red["prefix"], self.block.get("dtype", jnp.float32),
                                      self.block.get("param_dtype", jnp.float32), name="ctm")
          x, out["cluster_index"] = ctm(x)
        per_block = dict(red["blocks"][i]) if red else {}
        per_block.update(self.block_fields[i] if self.block_fields else {})
        keep = per_block.pop("prune_keep", 0)
        if keep:
          x, decision, policy, pruning = self._prune(x, decision, keep, red["locations"].index(i))
          out.update({f"{k}{i}": v for k, v in pruning.items()})
        block = block_cls(train=self.train, name=f"blocks_{i}", **self.block, **per_block)
        if red.get("kind") == "idlevit" and i in red["keep"]:  # the selected tokens run the block, the others idle
          x, aux = idlevit.idle_block(self, block, x, float(rates[i]), red["keep"][i], f"blocks_{i}",
                                      self.block["num_heads"], self.block.get("norm_eps", 1e-6))
        else:
          x, aux = block(x, float(rates[i]), size, source, policy)
        size, source = aux.get("size", size), aux.get("source", source)
        if red.get("kind") == "evo_vit":
          ranking = evo_vit.update(ranking, aux.pop("cls_attn"), red["tradeoff"][i])
          if i in red["ends"]:
            x = aux["tokens"] = jnp.concatenate([x, placeholders], axis=1)
        if red.get("kind") == "ats" and "policy" in aux:  # later blocks mask the padding (ATS); it stays zero
          policy = aux["policy"]
        if red.get("kind") == "ats" and policy is not None:
          x = aux["tokens"] = x * policy[..., None]
        for key, value in aux.items():
          out[f"{'block' if key == 'tokens' else key}{i}"] = value
    return x, out

  def _prune(self, x, decision, keep: int, stage: int):
    """DynamicViT before a pruning block: `(x, decision, policy, out)`; training masks, inference drops."""
    log_probs = dynamicvit.ScorePredictor(name=f"score_predictor_{stage}")(x[:, 1:], decision)
    if self.train:
      decision = dynamicvit.gumbel_keep(self.make_rng("gumbel"), log_probs).astype(x.dtype) * decision
      policy = jnp.concatenate([jnp.ones_like(decision[:, :1, 0]), decision[..., 0]], axis=1)
      return x, decision, policy, {"keep_decision": decision[..., 0], "keep_log_probs": log_probs}
    _, kept = jax.lax.top_k(log_probs[..., 0], keep)
    x = jnp.concatenate([x[:, :1], jnp.take_along_axis(x[:, 1:], kept[..., None], axis=1)], axis=1)
    return x, jnp.take_along_axis(decision, kept[..., None], axis=1), None, {"kept": kept}
