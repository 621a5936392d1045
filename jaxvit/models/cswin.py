"""CSWin Transformer (Dong et al. 2022, "CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped
Windows", CVPR 2022, arXiv:2107.00652).

A four-stage pyramid (sec. 3.1, fig. 2): an overlapping 7 x 7 / 4 convolutional token embedding (padding 2) with
LayerNorm, then stages of CSWin blocks (eq. 4: x + CSWin-Attention(LN(x)), x + MLP(LN(x))) separated by 3 x 3 / 2
convolutions (padding 1) with LayerNorm that double the width. The attention (`jaxvit.layers.stripe_attention`) runs
half of the heads in vertical and half in horizontal stripes of width `split_sizes[i]` (1, 2, 7, 7 at 224; 1, 2, 12,
12 at 384) with LePE; the last stage attends over its whole map. No position embedding: any input size whose stage
maps (but the last) are multiples of their stripe width works, non-square too; `img_size` is the reference resolution.
Final LayerNorm, mean over tokens, linear head. LayerNorm eps 1e-5; the official `drop_rate` drops only inside the MLP.

Followed (timm has no CSWin): `microsoft/CSWin-Transformer` `models/cswin.py` at commit
f111ae2f771df32006e7afd7916835dd67d4cb9d. Parameter names mirror its modules (`stage1_conv_embed`, `stage{s}_{j}`
with `qkv`, `attns_{i}/get_v`, `proj`, `norm1`, `norm2`, `mlp/fc1`, `mlp/fc2`; `merge{s}`, `norm`, `head`), except
that the embedding and merge convs reuse `ConvEmbed` (`proj` / `norm` for the official `stage1_conv_embed.0` / `.2`
and `merge{s}.conv` / `.norm`); `jaxvit.convert.cswin` maps official checkpoints. The official recipes train with
drop path 0.2 (T), 0.4 (S), 0.5 (B), fine-tune with 0.7 (B-384) and 0.2 (L); the default here is the constructor's 0.

Returns `(logits, out)`; `out` holds `stage0` ... `stage3` (`[B, H, W, C]` after each stage's blocks), `pre_logits`,
`logits`.
"""

import math
from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import linear_head
from jaxvit.layers.conv_embed import ConvEmbed
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import layer_norm
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.stripe_attention import cross_shaped_window_attention
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, check_stages, config_error

NORM_EPS = 1e-5  # torch's LayerNorm default, as the official code


class CSWinBlock(nn.Module):
  """x + DropPath(CSWin-Attention(LN(x))), then x + DropPath(MLP(LN(x))) on a map `[B, H, W, C]`; the official
  `CSWinBlock` (`norm1`, `qkv`, `attns_{i}`, `proj`, `norm2`, `mlp`)."""
  num_heads: int
  split_size: int
  last_stage: bool = False
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = cross_shaped_window_attention(layer_norm(NORM_EPS, name="norm1", **kw)(x), num_heads=self.num_heads,
                                      split_size=self.split_size, full=self.last_stage, qkv_bias=self.qkv_bias,
                                      attn_drop_rate=self.attn_drop_rate, train=self.train, **kw)
    x = x + drop_path(self, y, self.drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.drop_rate, name="mlp", **kw)(
        layer_norm(NORM_EPS, name="norm2", **kw)(x), train=self.train)
    x = x + drop_path(self, y, self.drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", None, None, "embed"))


def stage_maps(hw, num_stages: int) -> list[tuple[int, int]]:
  """Token-map sizes of the stages for an `(H, W)` input: the 7 x 7 / 4 conv (padding 2) gives (H - 3) // 4 + 1,
  each 3 x 3 / 2 merge (padding 1) rounds up."""
  h, w = (hw[0] - 3) // 4 + 1, (hw[1] - 3) // 4 + 1
  sizes = [(h, w)]
  for _ in range(num_stages - 1):
    h, w = -(-h // 2), -(-w // 2)
    sizes.append((h, w))
  return sizes


class CSWinTransformer(nn.Module):
  """CSWin classifier on NHWC images; the official `CSWinTransformer`."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  embed_dim: int = 64
  depths: Sequence[int] = (1, 2, 21, 1)  # the official `depth`
  split_sizes: Sequence[int] = (1, 2, 7, 7)  # stripe width per stage (the official `split_size`; the last unused)
  num_heads: Sequence[int] = (2, 4, 8, 16)
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_rate: float = 0.0  # inside the MLPs (the official `drop_rate`)
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dim * 2 ** (len(self.depths) - 1)

  def _check_size(self, hw, field: str, value):
    """Raises a ValueError naming `field` unless every stage but the last has a map divisible by its split size."""
    maps = stage_maps(hw, len(self.depths))
    if min(maps[-1]) < 1 or any(h % s or w % s for (h, w), s in zip(maps[:-1], self.split_sizes[:-1])):
      step = math.lcm(4, *(4 * 2 ** i * s for i, s in enumerate(self.split_sizes[:len(maps) - 1])))
      raise config_error(self, field, value,
                         f"sizes whose stage maps (here {maps}) are multiples of split_sizes={tuple(self.split_sizes)} "
                         f"but in the last stage, e.g. multiples of {step}")

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    n = check_stages(self, ("split_sizes", "num_heads"))
    if min(self.split_sizes) < 1:
      raise config_error(self, "split_sizes", self.split_sizes, "positive stripe widths")
    for i, heads in enumerate(self.num_heads):
      dim = self.embed_dim * 2 ** i
      if heads < 1 or dim % heads or (i < n - 1 and heads % 2):
        raise config_error(self, "num_heads", self.num_heads, f"divisors of the stage widths "
                           f"{[self.embed_dim * 2 ** j for j in range(n)]}, even but in the last stage (two halves)")
    hw = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    self._check_size(hw, "img_size", self.img_size)
    check_rates(self, ("drop_rate", "attn_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self._check_size(images.shape[1:3], "input size", tuple(images.shape[1:3]))
    x = ConvEmbed(self.embed_dim, 7, 4, 2, NORM_EPS, name="stage1_conv_embed", **kw)(images.astype(self.dtype))
    rates = np.split(np.linspace(0.0, self.drop_path_rate, sum(self.depths)), np.cumsum(self.depths)[:-1])
    out, last = {}, len(self.depths) - 1
    for i, depth in enumerate(self.depths):
      if i:
        x = ConvEmbed(x.shape[-1] * 2, 3, 2, 1, NORM_EPS, name=f"merge{i}", **kw)(x)
      for j in range(depth):
        x = CSWinBlock(self.num_heads[i], self.split_sizes[i], i == last, self.mlp_ratio, self.qkv_bias, self.drop_rate,
                       self.attn_drop_rate, float(rates[i][j]), train, name=f"stage{i + 1}_{j}", **kw)(x)
      out[f"stage{i}"] = x
    x = layer_norm(NORM_EPS, name="norm", **kw)(x)
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, 0.0, train, **kw)
    return out["logits"], out


def _register(name, img_size, **arch):
  """Registers `name` as a `CSWinTransformer` (official eval crop 0.9 at 224, 1.0 at 384)."""
  register_variant(CSWinTransformer, name, crop_pct=0.9 if img_size == 224 else 1.0, img_size=img_size, **arch)


_DEEP = dict(depths=(2, 4, 32, 2))
_register("cswin_tiny_224", 224)  # official CSWin_64_12211_tiny_224
_register("cswin_small_224", 224, **_DEEP)  # CSWin_64_24322_small_224
_register("cswin_base_224", 224, embed_dim=96, num_heads=(4, 8, 16, 32), **_DEEP)  # CSWin_96_24322_base_224
_register("cswin_large_224", 224, embed_dim=144, num_heads=(6, 12, 24, 24), **_DEEP)  # CSWin_144_24322_large_224
_register("cswin_base_384", 384, embed_dim=96, num_heads=(4, 8, 16, 32), split_sizes=(1, 2, 12, 12), **_DEEP)
_register("cswin_large_384", 384, embed_dim=144, num_heads=(6, 12, 24, 24), split_sizes=(1, 2, 12, 12), **_DEEP)
