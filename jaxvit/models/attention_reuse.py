"""Attention reuse across layers on a DeiT: SkipAt and ReViT (timm has neither).

*SkipAt* (Venkataramanan et al. 2024, "Skip-Attention: Improving Vision Transformers by Paying Less Attention",
arXiv:2301.02240, ICLR 2024, sec. 3.2): the MSA of the layers in `skip_blocks` is not computed; their attention
branch is Phi(Z^MSA_{l-1}), the parametric function (`jaxvit.layers.skip_attention.SkipAttentionPhi`) applied to
the previous layer's (computed or approximated) attention output on the patch tokens, the class token of the last
computed MSA passed on unchanged. Followed: Qualcomm-AI-research/skip-attention `model/vit_skipat.py`
(`VisionTransformerSkipAt`) and `model/uformer_utils.py` (`LeFF`) @a7a312dacf55cfd65e0a1e412621bd92d80e9b9b, whose
DeiT-S skips blocks 3..8 with one Phi each (`param_1` .. `param_6`, here `encoder/param_k`: LeFF with hidden 2C, a
5x5 depthwise conv and ECA).
The official model also builds `norm1` and `attn` in the skipped blocks and never calls them; they do not exist
here, so its sum(p.numel()) is larger by those (see tests/published.py).

*ReViT* (Diko et al. 2024, "ReViT: Enhancing Vision Transformers Feature Diversity with Attention Residual
Connections", arXiv:2402.11301, sec. 3): every block's pre-softmax scores are alpha S_l + (1 - alpha) A_{l-1}, A_{l-1}
the previous block's blended scores (`jaxvit.layers.residual_attention`); one alpha for the whole network, learned
(`learn_alpha`, param `alpha` initialised to `alpha`) or fixed. alpha = 1 is the plain ViT. Followed:
ADiko1997/ReViT `model/revit_model.py`, `model/attention.py` and `config/config-ReViT-B.yaml`
@2188c96376b63c6fadb8d73ab2823092f4242b73: ReViT-B has no class token, position embeddings on the patches,
LayerNorm then the token average, learned alpha from 0.5. The DeiT-S variant keeps DeiT's class token (the official
code's `cls_embed_on=True`; not a published configuration: the README gives ReViT-B only among plain ViTs).

Both are `VisionTransformer`s (its patch embedding, position embedding, pooling and head; parameter names
`patch_embed`, `tokens/cls_token`, `pos_embed`, `encoder/blocks_i/{norm1,attn,norm2,mlp}`, `norm`, `head`, so a
DeiT's weights initialise them) with their own block loop; `out` holds `block{i}`, `encoded`, `pre_logits`,
`logits`, and with `return_attention` `attn{i}` of the blocks that compute attention.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.layers.residual_attention import ResidualAttention
from jaxvit.layers.skip_attention import SkipAttentionPhi
from jaxvit.models.vit import ABS_POS_EMBEDS, VisionTransformer
from jaxvit.registry import register_variant
from jaxvit.utils import config_error


class ReuseBlock(nn.Module):
  """Pre-norm block x + DropPath(branch), then x + DropPath(MLP(LN(x))). The attention branch is `kind`: "msa"
  (MHSA(LN(x))), "skip" (the `reused` tokens given, no `norm1` / `attn`) or "residual" (ReViT's attention, blended
  with the `reused` scores by `alpha`). Returns `(x, branch)`: the attention output, or for "residual" the scores."""
  kind: str
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  return_attention: bool = False
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate, reused=None, alpha=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    attn = dict(num_heads=self.num_heads, qkv_bias=self.qkv_bias, attn_drop_rate=self.attn_drop_rate,
                proj_drop_rate=self.proj_drop_rate, return_attention=self.return_attention, name="attn", **kw)
    aux = {}
    if self.kind == "skip":
      y = branch = reused
    elif self.kind == "residual":
      y, branch, aux = ResidualAttention(**attn)(layers.layer_norm(name="norm1", **kw)(x), reused, alpha,
                                                 train=self.train)
    else:
      y, aux = layers.Attention(**attn)(layers.layer_norm(name="norm1", **kw)(x), train=self.train)
      branch = y
    x = x + layers.drop_path(self, y.astype(x.dtype), drop_path_rate, train=self.train)
    y = layers.Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(
        layers.layer_norm(name="norm2", **kw)(x), train=self.train)
    x = x + layers.drop_path(self, y, drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", "seq", "embed")), branch, aux


class ReuseEncoder(nn.Module):
  """`depth` `ReuseBlock`s (`blocks_i`) with stochastic depth rising linearly to `drop_path_rate`. SkipAt: the
  blocks in `skip_blocks` take Phi_k (`param_k`, k = 1, 2, ...) of the previous block's attention output on the
  patches, chained, with the class token of the last computed MSA. ReViT (`residual`): each block's scores go to
  the next, blended by `alpha`."""
  depth: int
  block: dict
  drop_path_rate: float = 0.0
  skip_blocks: Sequence[int] = ()
  phi: Optional[dict] = None  # SkipAttentionPhi fields
  residual: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, x, alpha=None):
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    out, cls, reused, k = {}, None, None, 0
    for i in range(self.depth):
      kind = "residual" if self.residual else "skip" if i in self.skip_blocks else "msa"
      if kind == "skip":
        k += 1
        reused = SkipAttentionPhi(**self.phi, name=f"param_{k}")(reused)
      block = ReuseBlock(kind, train=self.train, name=f"blocks_{i}", **self.block)
      x, branch, aux = block(x, float(rates[i]), jnp.concatenate([cls, reused], axis=1) if kind == "skip" else reused,
                             alpha)
      if kind == "msa":
        cls, reused = branch[:, :1], branch[:, 1:]
      elif kind == "residual":
        reused = branch
      out[f"block{i}"] = x
      out.update({f"{key}{i}": value for key, value in aux.items()})
    return x, out


class _ReuseViT(VisionTransformer):
  """A `VisionTransformer` whose blocks pass something on to the next; subclasses define `_blocks`."""

  def validate(self):
    super().validate()
    for field in ("reduction", "exits", "scan", "remat", "init_values"):
      if getattr(self, field):
        raise config_error(self, field, getattr(self, field), f"off for {type(self).__name__}")
    if self.mixer != "attention" or any(p not in ABS_POS_EMBEDS for p in self.position_parts):
      raise config_error(self, "mixer" if self.mixer != "attention" else "pos_embed",
                         self.mixer if self.mixer != "attention" else self.pos_embed,
                         "attention with an absolute position embedding")

  def _encoder(self, train: bool, **fields):
    block = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                 proj_drop_rate=self.proj_drop_rate, attn_drop_rate=self.attn_drop_rate,
                 return_attention=self.return_attention, dtype=self.dtype, param_dtype=self.param_dtype)
    return ReuseEncoder(self.depth, block, self.drop_path_rate, train=train, name="encoder", **fields)

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x, out = self._blocks(self._embed_tokens(images, train), train)

    fc_norm = self.global_pool != "token" if self.fc_norm is None else self.fc_norm
    norm = layers.layer_norm(name="fc_norm" if fc_norm else "norm", **kw)
    out["encoded"] = x = x if fc_norm else norm(x)
    pooled = layers.pool_tokens(x, self.global_pool, self.num_prefix_tokens)
    out["pre_logits"] = pooled = norm(pooled) if fc_norm else pooled
    if self.num_classes == 0:
      return pooled, out
    pooled = nn.Dropout(self.drop_rate)(pooled, deterministic=not train)
    out["logits"] = layers.dense(self.num_classes, ("embed", "classes"), name="head",
                                 kernel_init=nn.initializers.zeros, **kw)(pooled)
    return out["logits"], out


class SkipAtViT(_ReuseViT):
  """SkipAt on a DeiT: blocks `skip_blocks` (consecutive, after at least one computed MSA) reuse attention through
  one `SkipAttentionPhi` each (`param_1` ...), chained: Phi_k takes Phi_{k-1}'s output."""
  skip_blocks: Sequence[int] = (3, 4, 5, 6, 7, 8)
  phi_ratio: float = 2.0  # Phi's hidden width / embed_dim
  phi_kernel: int = 5  # Phi's depthwise conv
  phi_eca_kernel: int = 3  # Phi's ECA conv; 0: none

  def validate(self):
    super().validate()
    def bad(field, value, accepted):
      raise config_error(self, field, value, accepted)
    if not self.class_token or self.dist_token or self.reg_tokens:
      bad("class_token", self.class_token, "True, with no distillation or register tokens (Phi sees the patches)")
    skip = tuple(self.skip_blocks)
    if not skip or skip != tuple(range(skip[0], skip[0] + len(skip))) or skip[0] < 1 or skip[-1] >= self.depth:
      bad("skip_blocks", self.skip_blocks, f"consecutive block indices within 1..{self.depth - 1} (block 0 computes "
                                           f"the attention reused)")
    if self.phi_kernel < 1 or self.phi_kernel % 2 == 0:
      bad("phi_kernel", self.phi_kernel, "an odd size >= 1")
    if self.phi_eca_kernel < 0 or (self.phi_eca_kernel and self.phi_eca_kernel % 2 == 0):
      bad("phi_eca_kernel", self.phi_eca_kernel, "0 or an odd size")
    if self.phi_ratio <= 0:
      bad("phi_ratio", self.phi_ratio, "> 0")

  def _blocks(self, x, train):
    phi = dict(hidden_dim=int(self.phi_ratio * self.embed_dim), grid=self.grid, kernel_size=self.phi_kernel,
               eca_kernel_size=self.phi_eca_kernel, dtype=self.dtype, param_dtype=self.param_dtype)
    return self._encoder(train, skip_blocks=tuple(self.skip_blocks), phi=phi)(x)


class ReViT(_ReuseViT):
  """ReViT: residual attention in every block, one `alpha` (a learned param `alpha` `[1]` or a constant)."""
  alpha: float = 0.5
  learn_alpha: bool = True

  def validate(self):
    super().validate()
    if not self.learn_alpha and not 0.0 <= self.alpha <= 1.0:
      raise config_error(self, "alpha", self.alpha, "[0, 1] when fixed (learn_alpha=False)")

  def _blocks(self, x, train):
    alpha = self.alpha
    if self.learn_alpha:
      alpha = self.param("alpha", layers.with_axes(nn.initializers.constant(self.alpha), (None,)), (1,),
                         self.param_dtype)[0]
    return self._encoder(train, residual=True)(x, alpha)


_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
for _size, _arch in (("tiny", _TI), ("small", _S), ("base", _B)):  # the official skipat_{tiny,small,base}_patch16_224
  register_variant(SkipAtViT, f"deit_{_size}_skipat_patch16_224", **_arch)
register_variant(ReViT, "deit_small_revit_patch16_224", **_S)
# config/config-ReViT-B.yaml: no class token, LayerNorm then the token average
register_variant(ReViT, "revit_base_patch16_224", class_token=False, global_pool="avg", fc_norm=False, **_B)
