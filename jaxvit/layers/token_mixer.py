"""Token mixers a pre-norm ViT block can use in place of self-attention: `VisionTransformer(mixer=...)`.

The block stays `x + mixer(LN(x))`, then the MLP; only how tokens exchange information changes, which is
what the survey's token-mixer ablation compares (MetaFormer, arXiv:2111.11418, sec. 3). `attention` is the
block's own multi-head self-attention (with RoPE, token reduction and attention maps); the others:
  mlp       MLP-Mixer's token-mixing MLP (arXiv:2105.01601, eq. 1), hidden tokens 0.5 x embed dim as timm's
  linear    ResMLP's cross-patch linear layer (arXiv:2105.03404, eq. 1)
  pooling   PoolFormer's average pooling minus identity on the patch grid (arXiv:2111.11418, eq. 4)
  additive  SwiftFormer's efficient additive attention (arXiv:2303.15446, eq. 4-6), linear in the tokens
`mlp` and `linear` hold weights tied to the token count; `pooling` needs the patch grid (no prefix tokens).
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.additive_attention import EfficientAdditiveAttention
from jaxvit.layers.mixers import CrossPatchLinear, TokenMixingMlp
from jaxvit.layers.pooling_mixer import pooling_mixer

MIXERS = ("attention", "mlp", "linear", "pooling", "additive")
GRID_MIXERS = ("pooling",)  # mix over the 2D patch grid: no prefix tokens


class TokenMixer(nn.Module):
  """`[B, N, C] -> [B, N, C]` by one of MIXERS other than `attention` (which the block itself runs)."""
  kind: str
  grid: tuple  # (h, w) patches; the last h * w tokens
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
    if self.kind == "pooling":
      h, w = self.grid
      if n != h * w:
        raise ValueError(f"the pooling mixer needs exactly the {h}x{w} patch tokens, got {n} tokens")
      return pooling_mixer(x.reshape(b, h, w, c)).reshape(b, n, c)
    if self.kind == "additive":
      y = EfficientAdditiveAttention(c, name="additive", **kw)(x)
      return nn.Dropout(self.drop_rate)(y, deterministic=not train)
    raise ValueError(f"TokenMixer: kind={self.kind!r}; accepted: {MIXERS[1:]}")
