"""PVTv2 (Wang et al. 2021, "PVT v2: Improved Baselines with Pyramid Vision Transformer", arXiv:2106.13797);
timm's `pvt_v2.py` is the file followed.

A four-stage pyramid of pre-norm transformer blocks on token maps `[B, H, W, C]`, strides 4, 8, 16, 32. PVTv2's
three changes to PVT (arXiv:2102.12122): overlapping patch embedding (`layers.overlap_patch_embed`), a 3x3
depthwise conv inside the MLP instead of a position embedding (`layers.conv_mlp`), and, for `-li` variants,
linear spatial-reduction attention (keys / values pooled to 7x7, `layers.sr_attention`). No position embedding,
so any input size works (each stage's map at least `sr_ratio` wide); `img_size` is the reference resolution.
Parameter names mirror timm's (`patch_embed`, `stages_{i}/downsample`, `stages_{i}/blocks_{j}`, `stages_{i}/norm`,
`head`). Returns `(logits, out)`; `out` holds `stage0` ... `stage3` (after each stage's norm), `pre_logits`,
`logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv_mlp import MlpWithDepthwiseConv
from jaxvit.layers.conv import linear_head
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import layer_norm
from jaxvit.layers.overlap_patch_embed import OverlapPatchEmbed
from jaxvit.layers.sr_attention import SpatialReductionAttention
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, check_stages, config_error


class Block(nn.Module):
  """x + DropPath(SRA(LN(x))), then x + DropPath(ConvMLP(LN(x))) on a token map `[B, H, W, C]`; timm's `Block`
  (`norm1`, `attn`, `norm2`, `mlp`; LayerNorm eps 1e-6)."""
  num_heads: int
  mlp_ratio: float = 4.0
  sr_ratio: int = 1
  linear: bool = False
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = SpatialReductionAttention(self.num_heads, self.sr_ratio, self.linear, qkv_bias=self.qkv_bias,
                                  attn_drop_rate=self.attn_drop_rate, proj_drop_rate=self.proj_drop_rate,
                                  name="attn", **kw)(layer_norm(1e-6, name="norm1", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = MlpWithDepthwiseConv(int(x.shape[-1] * self.mlp_ratio), self.linear, drop_rate=self.proj_drop_rate,
                             name="mlp", **kw)(layer_norm(1e-6, name="norm2", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", None, None, "embed"))


class Stage(nn.Module):
  """(3x3 / 2 overlapping patch embedding `downsample` unless first) -> `depth` blocks -> LayerNorm (`norm`)."""
  dim: int
  depth: int
  downsample: bool
  block: dict
  drop_path_rates: tuple = ()
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.downsample:
      x = OverlapPatchEmbed(self.dim, 3, 2, name="downsample", **kw)(x)
    for i in range(self.depth):
      x = Block(train=self.train, name=f"blocks_{i}", **self.block, **kw)(x, self.drop_path_rates[i])
    return layer_norm(1e-6, name="norm", **kw)(x)


class PyramidVisionTransformerV2(nn.Module):
  """PVTv2 classifier on NHWC images; timm's `PyramidVisionTransformerV2`."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  depths: Sequence[int] = (3, 4, 6, 3)
  embed_dims: Sequence[int] = (64, 128, 320, 512)
  num_heads: Sequence[int] = (1, 2, 5, 8)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)  # spatial reduction of keys / values per stage (unused with `linear`)
  mlp_ratios: Sequence[float] = (8.0, 8.0, 4.0, 4.0)
  qkv_bias: bool = True
  linear: bool = False  # PVTv2-li: linear SRA (pool to 7x7) and a ReLU before the MLP's depthwise conv
  drop_rate: float = 0.0  # before the head
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def stage_sizes(self, hw) -> list[tuple[int, int]]:
    """Token-map sizes of the four stages for an `(H, W)` input: the 7x7 / 4 and 3x3 / 2 convs round up."""
    sizes, (h, w) = [], (-(-hw[0] // 4), -(-hw[1] // 4))
    for i in range(len(self.depths)):
      if i:
        h, w = -(-h // 2), -(-w // 2)
      sizes.append((h, w))
    return sizes

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    check_stages(self, ("embed_dims", "num_heads", "sr_ratios", "mlp_ratios"))
    for dim, heads in zip(self.embed_dims, self.num_heads):
      if dim % heads:
        raise config_error(self, "num_heads", self.num_heads, f"divisors of embed_dims={self.embed_dims}")
    hw = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    if not self.linear:
      for (h, w), r in zip(self.stage_sizes(hw), self.sr_ratios):
        if min(h, w) < r:
          raise config_error(self, "img_size", self.img_size,
                             f"sizes whose stage maps {self.stage_sizes(hw)} are at least sr_ratios={self.sr_ratios}")
    check_rates(self, ("drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = OverlapPatchEmbed(self.embed_dims[0], 7, 4, name="patch_embed", **kw)(images.astype(self.dtype))
    rates = np.split(np.linspace(0.0, self.drop_path_rate, sum(self.depths)), np.cumsum(self.depths)[:-1])
    out = {}
    for i, depth in enumerate(self.depths):
      block = dict(num_heads=self.num_heads[i], mlp_ratio=self.mlp_ratios[i], sr_ratio=self.sr_ratios[i],
                   linear=self.linear, qkv_bias=self.qkv_bias, proj_drop_rate=self.proj_drop_rate,
                   attn_drop_rate=self.attn_drop_rate)
      x = Stage(self.embed_dims[i], depth, i > 0, block, tuple(float(r) for r in rates[i]), train, name=f"stages_{i}",
                **kw)(x)
      out[f"stage{i}"] = x
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, self.drop_rate, train, **kw)
    return out["logits"], out


def _register(name, **arch):
  """Registers `name` as a `PyramidVisionTransformerV2` with fields `arch` (timm's eval crop 0.9)."""
  register_variant(PyramidVisionTransformerV2, name, crop_pct=0.9, **arch)


_WIDE = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))
_register("pvt_v2_b0", depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8))
_register("pvt_v2_b1", depths=(2, 2, 2, 2), **_WIDE)
_register("pvt_v2_b2", depths=(3, 4, 6, 3), **_WIDE)
_register("pvt_v2_b2_li", depths=(3, 4, 6, 3), linear=True, **_WIDE)
_register("pvt_v2_b3", depths=(3, 4, 18, 3), **_WIDE)
_register("pvt_v2_b4", depths=(3, 8, 27, 3), **_WIDE)
_register("pvt_v2_b5", depths=(3, 6, 40, 3), mlp_ratios=(4.0, 4.0, 4.0, 4.0), **_WIDE)
