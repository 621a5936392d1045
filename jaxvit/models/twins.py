"""Twins (Chu et al. 2021, "Twins: Revisiting the Design of Spatial Attention in Vision Transformers",
arXiv:2104.13840); timm's `twins.py` is the file followed.

Two four-stage pyramids (strides 4, 8, 16, 32) of pre-norm transformer blocks on token maps `[B, H, W, C]`, each
stage starting with a non-overlapping patch embedding + LayerNorm and placing CPVT's position encoding generator
(PEG, arXiv:2102.10882, `layers.peg`) after its first block:
- Twins-PCPVT (`wss=None`): every block uses PVT's global sub-sampled (spatial-reduction) attention, GSA
  (`layers.sr_attention`);
- Twins-SVT (`wss` = window sizes): blocks alternate locally-grouped attention in `ws x ws` windows (LSA,
  `layers.grouped_attention`) and GSA.
Parameter names mirror timm's (`patch_embeds_{k}`, `blocks_{k}_{i}`, `pos_block_{k}`, `norm`, `head`). Returns
`(logits, out)`; `out` holds `stage0` ... `stage3` (the last after the final norm), `pre_logits`, `logits`.
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import linear_head
from jaxvit.layers.drop import drop_path
from jaxvit.layers.grouped_attention import LocallyGroupedAttention
from jaxvit.layers.init import layer_norm
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.layers.peg import PosConv
from jaxvit.layers.sr_attention import SpatialReductionAttention
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, check_stages, config_error


class PatchEmbedNorm(nn.Module):
  """`[B, H, W, C] -> [B, H / p, W / p, D]`: non-overlapping `p x p` patches projected (`proj`, as
  `layers.PatchEmbed`), then LayerNorm (`norm`, torch's eps 1e-5); timm's Twins `PatchEmbed`."""
  embed_dim: int
  patch_size: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, _ = x.shape
    x = PatchEmbed(self.embed_dim, self.patch_size, name="proj", **kw)(x)
    x = layer_norm(1e-5, name="norm", **kw)(x)
    return x.reshape(b, h // self.patch_size, w // self.patch_size, self.embed_dim)


class Block(nn.Module):
  """x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x))); Attn is LSA with `window_size` > 1, else GSA
  with `sr_ratio`. timm's `Block` (`norm1`, `attn`, `norm2`, `mlp`; LayerNorm eps 1e-6)."""
  num_heads: int
  mlp_ratio: float = 4.0
  sr_ratio: int = 1
  window_size: int = 1
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drops = dict(attn_drop_rate=self.attn_drop_rate, proj_drop_rate=self.proj_drop_rate)
    if self.window_size > 1:
      attn = LocallyGroupedAttention(self.num_heads, self.window_size, name="attn", **drops, **kw)
    else:
      attn = SpatialReductionAttention(self.num_heads, self.sr_ratio, name="attn", **drops, **kw)
    y = attn(layer_norm(1e-6, name="norm1", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(
        layer_norm(1e-6, name="norm2", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", None, None, "embed"))


class Twins(nn.Module):
  """Twins-PCPVT / Twins-SVT classifier on NHWC images; timm's `Twins`.

  Input sizes: multiples of `patch_size * 8` (each stage's patch embedding divides its map exactly).
  """
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  patch_size: int = 4  # the first stage's patch; later stages merge 2 x 2
  in_chans: int = 3
  depths: Sequence[int] = (3, 4, 6, 3)
  embed_dims: Sequence[int] = (64, 128, 256, 512)
  num_heads: Sequence[int] = (1, 2, 4, 8)
  mlp_ratios: Sequence[float] = (4.0, 4.0, 4.0, 4.0)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)  # GSA's key / value reduction per stage
  wss: Optional[Sequence[int]] = None  # SVT: LSA window size per stage (even blocks); None: PCPVT (GSA only)
  drop_rate: float = 0.0  # before the head
  pos_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    fields = ("embed_dims", "num_heads", "mlp_ratios", "sr_ratios") + (("wss",) if self.wss is not None else ())
    n = check_stages(self, fields)
    for dim, heads in zip(self.embed_dims, self.num_heads):
      if dim % heads:
        raise config_error(self, "num_heads", self.num_heads, f"divisors of embed_dims={self.embed_dims}")
    if self.wss is not None and min(self.wss) < 2:
      raise config_error(self, "wss", self.wss, "window sizes >= 2, or None (Twins-PCPVT)")
    stride = self.patch_size * 2 ** (n - 1)
    hw = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    if hw[0] % stride or hw[1] % stride:
      raise config_error(self, "img_size", self.img_size, f"multiples of {stride} (patch_size x 2^(stages - 1))")
    for k, r in enumerate(self.sr_ratios):
      if min(hw) // (self.patch_size * 2 ** k) < r:
        raise config_error(self, "img_size", self.img_size, f"sizes whose stage-{k} map is at least sr_ratio={r}")
    check_rates(self, ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    x, out, index = images.astype(self.dtype), {}, 0
    for k, depth in enumerate(self.depths):
      x = PatchEmbedNorm(self.embed_dims[k], self.patch_size if k == 0 else 2, name=f"patch_embeds_{k}", **kw)(x)
      x = nn.Dropout(self.pos_drop_rate)(x, deterministic=not train)
      for i in range(depth):
        window = 1 if self.wss is None or i % 2 else self.wss[k]
        x = Block(self.num_heads[k], self.mlp_ratios[k], self.sr_ratios[k], window, self.proj_drop_rate,
                  self.attn_drop_rate, train, name=f"blocks_{k}_{i}", **kw)(x, float(rates[index]))
        index += 1
        if i == 0:
          x = PosConv(name=f"pos_block_{k}", **kw)(x)  # PEG after the stage's first block
      out[f"stage{k}"] = x
    out[f"stage{len(self.depths) - 1}"] = x = layer_norm(1e-6, name="norm", **kw)(x)
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, self.drop_rate, train, **kw)
    return out["logits"], out


def _register(name, **arch):
  """Registers `name` as a `Twins` with fields `arch` (timm's eval crop 0.9)."""
  register_variant(Twins, name, crop_pct=0.9, **arch)


_PCPVT = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8.0, 8.0, 4.0, 4.0))
_register("twins_pcpvt_small", depths=(3, 4, 6, 3), **_PCPVT)
_register("twins_pcpvt_base", depths=(3, 4, 18, 3), **_PCPVT)
_register("twins_pcpvt_large", depths=(3, 8, 27, 3), **_PCPVT)
_register("twins_svt_small", depths=(2, 2, 10, 4), embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16),
          wss=(7, 7, 7, 7))
_register("twins_svt_base", depths=(2, 2, 18, 2), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24),
          wss=(7, 7, 7, 7))
_register("twins_svt_large", depths=(2, 2, 18, 2), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32),
          wss=(7, 7, 7, 7))
