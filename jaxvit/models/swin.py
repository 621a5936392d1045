"""Swin Transformer (Liu et al. 2021, arXiv:2103.14030) and its S3 / AutoFormerV2 search results (Chen et al.
2021, arXiv:2111.14725: per-stage window sizes); timm's `swin_transformer.py` is the file followed.

A hierarchical transformer on NHWC maps: a 4x4 patch embedding, then four stages of blocks that alternate
window attention (W-MSA) and shifted window attention (SW-MSA, `jaxvit.layers.window_attention`), each stage
after the first opening with a 2x2 patch merging (sec. 3.1, 3.2; eq. 3). Parameter names mirror timm's
(`layers_1/downsample/reduction`, `layers_0/blocks_1/attn/relative_position_bias_table`, ...) so weights convert
one to one (`jaxvit.convert`). Returns `(logits, out)`; `out` holds `stage0` ... `stage3` `[B, H, W, C]`,
`pre_logits` `[B, num_features]` and `logits`.

Input sizes: the windows follow timm's rule per stage and axis: a stage whose grid is no larger than the window
attends over the whole grid (the window shrinks to the grid, with no shift); a larger grid must be a multiple of
the window (timm would zero-pad it; here it is a config error). An odd grid is zero-padded before patch merging,
as timm does. A window clamped at `img_size` shrinks its relative position table, so such a model only takes
checkpoints made for the same clamped windows.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import ClassifierHead
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, layer_norm
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.layers.window_attention import WindowAttention
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

NORM_EPS = 1e-5  # torch's LayerNorm default, which timm's Swin uses


def stage_windows(grid, window_sizes, num_stages: int):
  """Per stage `(grid, window, shift)` as (h, w) pairs for a patch `grid`, following timm: stage i > 0 merges
  to ceil(grid / 2); along an axis no longer than the window, the window is the grid and the shift 0; otherwise
  the shift is window // 2. Returns None for a stage whose grid is not a multiple of its window."""
  out, (h, w) = [], grid
  for i, m in enumerate(window_sizes[:num_stages]):
    if i > 0:
      h, w = -(-h // 2), -(-w // 2)
    window = tuple(min(m, g) for g in (h, w))
    shift = tuple(0 if g <= m else m // 2 for g in (h, w))
    out.append(((h, w), window, shift) if h % window[0] == 0 and w % window[1] == 0 else None)
  return out


class PatchMerging(nn.Module):
  """`[B, H, W, C] -> [B, H / 2, W / 2, out_dim]`: each 2x2 neighbourhood concatenated (timm's order: the
  column offset outer, the row offset inner), LayerNorm, then a linear `reduction` without bias (sec. 3.1).
  An odd map is zero-padded at the bottom / right first."""
  out_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = x.shape
    if h % 2 or w % 2:
      x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
      h, w = h + h % 2, w + w % 2
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
    x = layer_norm(NORM_EPS, name="norm", **kw)(x)
    return dense(self.out_dim, ("mlp", "embed"), use_bias=False, name="reduction", **kw)(x)


class SwinBlock(nn.Module):
  """x + DropPath((S)W-MSA(LN(x))), then x + DropPath(MLP(LN(x))) (eq. 3); timm's `SwinTransformerBlock`."""
  num_heads: int
  window_size: tuple
  shift_size: tuple
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = WindowAttention(self.num_heads, self.window_size, self.shift_size, self.qkv_bias, self.attn_drop_rate,
                        self.proj_drop_rate, name="attn", **kw)(layer_norm(NORM_EPS, name="norm1", **kw)(x),
                                                               train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(
        layer_norm(NORM_EPS, name="norm2", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", None, None, "embed"))


class SwinStage(nn.Module):
  """Patch merging (stages after the first), then `depth` blocks alternating W-MSA and SW-MSA; timm's
  `SwinTransformerStage` (`downsample`, `blocks`)."""
  dim: int
  depth: int
  num_heads: int
  window_size: tuple
  shift_size: tuple
  downsample: bool
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rates: tuple = ()
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.downsample:
      x = PatchMerging(self.dim, name="downsample", **kw)(x)
    for i in range(self.depth):
      shift = (0, 0) if i % 2 == 0 else self.shift_size
      x = SwinBlock(self.num_heads, self.window_size, shift, self.mlp_ratio, self.qkv_bias, self.proj_drop_rate,
                    self.attn_drop_rate, self.train, name=f"blocks_{i}", **kw)(x, self.drop_path_rates[i])
    return x


class SwinTransformer(nn.Module):
  """Swin Transformer classifier on NHWC images; timm's `SwinTransformer` (average-pooled head)."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  patch_size: int = 4
  embed_dim: int = 96  # stage i is embed_dim * 2**i wide
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: Union[int, Sequence[int]] = 7  # M, one for all stages or one per stage (S3)
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_rate: float = 0.0  # before the head
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dim * 2 ** (len(self.depths) - 1)

  @property
  def window_sizes(self) -> tuple[int, ...]:
    """`window_size` per stage."""
    ws = self.window_size
    return (ws,) * len(self.depths) if isinstance(ws, int) else tuple(ws)

  def _stages(self, h: int, w: int, field: str = "img_size", value=None):
    """`stage_windows` for an `h x w` input, or one config error naming `field` (img_size, or the input)."""
    value = self.img_size if value is None else value
    if h % self.patch_size or w % self.patch_size:
      raise config_error(self, field, value, f"sizes divisible by patch_size={self.patch_size}")
    stages = stage_windows((h // self.patch_size, w // self.patch_size), self.window_sizes, len(self.depths))
    if None in stages:
      i = stages.index(None)
      raise config_error(self, field, value, f"sizes whose patch grid at every stage (grid / patch_size, then "
                         f"halved, rounding up, per stage) is a multiple of that stage's window_size "
                         f"{self.window_sizes} or no larger than it (stage {i} is not)")
    return stages

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    n = len(self.depths)
    if n < 1 or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "one or more stage depths >= 1")
    if len(self.num_heads) != n:
      raise config_error(self, "num_heads", self.num_heads, f"one head count per stage ({n})")
    for i, heads in enumerate(self.num_heads):
      if (self.embed_dim * 2 ** i) % heads:
        raise config_error(self, "num_heads", self.num_heads, "divisors of each stage's width embed_dim * 2**i")
    if len(self.window_sizes) != n or min(self.window_sizes) < 1:
      raise config_error(self, "window_size", self.window_size, f"an int >= 1 or one per stage ({n})")
    check_rates(self, ("drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"))
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    self._stages(h, w)

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, _ = images.shape
    stages = self._stages(h, w, "input size", (h, w))
    x = PatchEmbed(self.embed_dim, self.patch_size, name="patch_embed", **kw)(images.astype(self.dtype))
    x = layer_norm(NORM_EPS, name="patch_embed_norm", **kw)(x)
    x = x.reshape(b, h // self.patch_size, w // self.patch_size, self.embed_dim)  # [B, H / 4, W / 4, C]
    rates = np.split(np.linspace(0.0, self.drop_path_rate, sum(self.depths)), np.cumsum(self.depths)[:-1])
    out = {}
    for i, (depth, heads, (_, window, shift)) in enumerate(zip(self.depths, self.num_heads, stages)):
      x = SwinStage(self.embed_dim * 2 ** i, depth, heads, window, shift, i > 0, self.mlp_ratio, self.qkv_bias,
                    self.proj_drop_rate, self.attn_drop_rate, tuple(float(r) for r in rates[i]), train,
                    name=f"layers_{i}", **kw)(x)
      out[f"stage{i}"] = x
    x = layer_norm(NORM_EPS, name="norm", **kw)(x)
    out["pre_logits"], out["logits"] = ClassifierHead(self.num_classes, self.drop_rate, name="head", **kw)(x, train)
    return out["logits"], out


def _register(name, img_size=224, crop_pct=0.9, **arch):
  """Registers `name` as a `SwinTransformer` with architecture fields `arch` and timm's default eval crop."""
  register_variant(SwinTransformer, name, crop_pct=crop_pct, img_size=img_size, **arch)


_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_S = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_L = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
for _size, _arch in (("tiny", _T), ("small", _S), ("base", _B), ("large", _L)):
  _register(f"swin_{_size}_patch4_window7_224", window_size=7, **_arch)
for _size, _arch in (("base", _B), ("large", _L)):
  _register(f"swin_{_size}_patch4_window12_384", 384, 1.0, window_size=12, **_arch)
# S3 (AutoFormerV2): searched per-stage windows
_register("swin_s3_tiny_224", window_size=(7, 7, 14, 7), **_T)
_register("swin_s3_small_224", window_size=(14, 14, 14, 7), **_S)
_register("swin_s3_base_224", window_size=(7, 7, 14, 7), embed_dim=96, depths=(2, 2, 30, 2), num_heads=(3, 6, 12, 24))
