"""Token mixers a pre-norm ViT block can use in place of self-attention: `VisionTransformer(mixer=...)`.

The block stays `x + mixer(LN(x))`, then the MLP; only how tokens exchange information changes, which is
what the survey's token-mixer ablation compares (MetaFormer, arXiv:2111.11418, sec. 3). `attention` is the
block's own multi-head self-attention (with RoPE, token reduction and attention maps); the others:
  mlp       MLP-Mixer's token-mixing MLP (arXiv:2105.01601, eq. 1), hidden tokens 0.5 x embed dim as timm's
  linear    ResMLP's cross-patch linear layer (arXiv:2105.03404, eq. 1)
  pooling   PoolFormer's average pooling minus identity on the patch grid (arXiv:2111.11418, eq. 4)
  additive  SwiftFormer's efficient additive attention (arXiv:2303.15446, eq. 4-6), linear in the tokens
  performer Performer's FAVOR+ attention with positive orthogonal random features (arXiv:2009.14794), linear
  linformer Linformer's attention on keys / values projected to min(64, N) tokens (arXiv:2006.04768, eq. 7)
  posgu     PosMLP's positional gating unit, one relative-position map per head (arXiv:2207.07284)
`mlp`, `linear` and `linformer` hold weights tied to the token count; `pooling` and `posgu` need the patch grid
(no prefix tokens). `performer` and `linformer` keep the attention's `qkv` / `proj` parameters.
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.additive_attention import EfficientAdditiveAttention
from jaxvit.layers.linear_attention import LinformerAttention, PerformerAttention
from jaxvit.layers.mixers import CrossPatchLinear, TokenMixingMlp
from jaxvit.layers.pooling_mixer import pooling_mixer
from jaxvit.layers.positional_gating import PosMlpMixer

MIXERS = ("attention", "mlp", "linear", "pooling", "additive", "performer", "linformer", "posgu")
GRID_MIXERS = ("pooling", "posgu")  # mix over the 2D patch grid: no prefix tokens
LINFORMER_K = 64  # keys / values projected to min(LINFORMER_K, N) tokens


class TokenMixer(nn.Module):
  """`[B, N, C] -> [B, N, C]` by one of MIXERS other than `attention` (which the block itself runs)."""
  kind: str
  grid: tuple  # (h, w) patches; the last h * w tokens
  num_heads: int = 1  # performer, linformer: attention heads; posgu: positional maps
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, n, c = x.shape
    if self.kind == "mlp":
      return TokenMixingMlp(int(0.5 * c), drop_rate=self.drop_rate, name="mlp_tokens", **kw)(x, train=train)
    if self.kind == "linear":
      return CrossPatchLinear(name="linear_tokens", **kw)(x)
    if self.kind in GRID_MIXERS and n != self.grid[0] * self.grid[1]:
      raise ValueError(f"the {self.kind} mixer needs exactly the {self.grid[0]}x{self.grid[1]} patch tokens, got "
                       f"{n} tokens")
    if self.kind == "pooling":
      return pooling_mixer(x.reshape(b, *self.grid, c)).reshape(b, n, c)
    if self.kind == "posgu":
      y = PosMlpMixer(self.grid, self.num_heads, name="posgu", **kw)(x)
    elif self.kind == "additive":
      y = EfficientAdditiveAttention(c, name="additive", **kw)(x)
    elif self.kind == "performer":
      y = PerformerAttention(self.num_heads, name="attn", **kw)(x)
    elif self.kind == "linformer":
      y = LinformerAttention(self.num_heads, min(LINFORMER_K, n), name="attn", **kw)(x)
    else:
      raise ValueError(f"TokenMixer: kind={self.kind!r}; accepted: {MIXERS[1:]}")
    return nn.Dropout(self.drop_rate)(y, deterministic=not train)
