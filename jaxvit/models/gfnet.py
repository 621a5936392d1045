"""Global Filter Networks (GFNet, Rao et al. 2021, arXiv:2107.00645): ViT-style networks whose self-attention is
replaced by the global filter layer `x <- F^-1[K (.) F[x]]` (Sec. 3.2, `jaxvit.layers.global_filter`); the official
`gfnet.py` of raoyongming/GFNet (with the variants of its `main_gfnet.py`) is the file followed (timm has no GFNet).

- `GFNet` (isotropic; GFNet-Ti / XS / S / B): a stride-16 patch embedding plus a learned position embedding, `depth`
  blocks `x + DropPath(MLP(LN(GlobalFilter(LN(x)))))` (as the official `Block`: one residual around filter and MLP
  together), a final LayerNorm, average pooling and a linear head.
- `GFNetPyramid` (hierarchical; GFNet-H-Ti / S / B): four stages at strides 4, 8, 16, 32 joined by non-overlapping
  2x2 patch merging (`DownLayer`), blocks with a per-channel LayerScale `gamma` on that one residual branch.

Parameter names are the official ones (`patch_embed`, `pos_embed`, `blocks_{i}` / `blocks_{s}_{j}`, `norm1`,
`filter.complex_weight`, `norm2`, `mlp.fc1` / `fc2`, `gamma`, `norm`, `head`). Patch embeddings run as reshape +
matmul (`PatchEmbed`), the filters as XLA's FFTs in float32 (as the official code, also under bfloat16).

The global filter is sized for the token grid of `img_size`: other input sizes raise an error naming `img_size`.
GFNet fine-tunes at another resolution by building the model there and resizing the filters and position
embedding once (`jaxvit.layers.global_filter.resize_global_filter`, bicubic, as `main_gfnet.py`).

Counts: parameters equal the official models'; GMACs are fvcore's count of the official models (matmuls,
convolutions and LayerNorms; fvcore skips `rfft2` / `irfft2` and the complex product), which `count_macs`
reproduces. The paper's FLOPs also count the filter layers (the FFTs, O(hwC log hw), and the complex product), under
1% of the total at 224 px: GFNet-Ti / XS / S / B 1.3 / 2.9 / 4.5 / 7.9 GFLOPs against fvcore's 1.28 / 2.84 / 4.47 /
7.91. GFNet-H's published 2.0 / 4.5 / 8.4 are below fvcore's 2.05 / 4.60 / 8.55 (not explained by the FFTs).

Returns `(logits, out)`; `out` holds `pre_logits` `[B, C]`, `logits`, `encoded` (final-norm tokens) and, for
`GFNetPyramid`, the stage maps `stage0..3` `[B, H, W, C]` (`GFNet`: `block{i}` tokens `[B, N, C]`).
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.drop import drop_path
from jaxvit.layers.global_filter import GlobalFilter
from jaxvit.layers.init import dense, layer_norm, trunc_normal_02, with_axes
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error


def _pair(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


class GFNetBlock(nn.Module):
  """`x + DropPath(gamma * MLP(LN(GlobalFilter(LN(x)))))` on tokens `[B, h * w, C]` of an `h x w` `grid`; the
  official `Block` (`layer_scale_init=None`, no `gamma`) and `BlockLayerScale`."""
  grid: tuple
  mlp_ratio: float = 4.0
  layer_scale_init: Union[float, None] = None
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = x.shape[-1]
    y = layer_norm(name="norm1", **kw)(x)
    y = GlobalFilter(name="filter", **kw)(y, self.grid)
    y = layer_norm(name="norm2", **kw)(y)
    y = Mlp(int(dim * self.mlp_ratio), drop_rate=self.drop_rate, name="mlp", **kw)(y, train=self.train)
    if self.layer_scale_init is not None:
      init = with_axes(lambda k, s, d: jnp.full(s, self.layer_scale_init, d), ("embed",))
      y = y * self.param("gamma", init, (dim,), self.param_dtype).astype(self.dtype)
    return x + drop_path(self, y, self.drop_path_rate, train=self.train)


def _head(module, x, out, train):
  """Final LayerNorm (`norm`), average pooling over tokens, dropout and the zero-initialised linear `head`."""
  kw = dict(dtype=module.dtype, param_dtype=module.param_dtype)
  out["encoded"] = x = layer_norm(name="norm", **kw)(x)
  out["pre_logits"] = pooled = x.mean(axis=1)
  if module.num_classes == 0:
    out["logits"] = pooled
    return pooled, out
  pooled = nn.Dropout(module.drop_rate)(pooled, deterministic=not train)
  out["logits"] = dense(module.num_classes, ("embed", "classes"), name="head", kernel_init=nn.initializers.zeros,
                        **kw)(pooled)
  return out["logits"], out


def _check_input(module, images, expected):
  if tuple(images.shape[1:3]) != tuple(expected):
    raise config_error(module, "img_size", module.img_size,
                       f"the input size only ({expected[0]}x{expected[1]}: the global filters are sized by its token "
                       f"grid); for {images.shape[1]}x{images.shape[2]} images create the model with "
                       f"img_size={tuple(images.shape[1:3])} (and resize the filters with "
                       f"jaxvit.layers.global_filter.resize_global_filter)")


def _pos_embed(module, x):
  pos = module.param("pos_embed", with_axes(trunc_normal_02, (None, "seq", "embed")), (1,) + x.shape[1:],
                     module.param_dtype)
  return x + pos.astype(x.dtype)


class GFNet(nn.Module):
  """Isotropic GFNet classifier on NHWC images; the official `GFNet` (its `representation_size` unused by the
  variants, not kept). Stochastic depth grows linearly from 0 to `drop_path_rate` over the blocks."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224  # the only input size: the filters are sized by its patch grid
  in_chans: int = 3
  patch_size: int = 16
  embed_dim: int = 384
  depth: int = 12
  mlp_ratio: float = 4.0
  drop_rate: float = 0.0  # before the head (the official `dropcls`)
  proj_drop_rate: float = 0.0  # after the position embedding and inside the MLPs (the official `drop_rate`)
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def grid(self) -> tuple[int, int]:
    h, w = _pair(self.img_size)
    return h // self.patch_size, w // self.patch_size

  @property
  def num_features(self) -> int:
    return self.embed_dim

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    h, w = _pair(self.img_size)
    if h % self.patch_size or w % self.patch_size or min(h, w) < self.patch_size:
      raise config_error(self, "img_size", self.img_size, f"positive multiples of patch_size={self.patch_size}")
    if self.depth < 1:
      raise config_error(self, "depth", self.depth, "a positive number of blocks")
    check_rates(self, ("drop_rate", "proj_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    _check_input(self, images, (self.grid[0] * self.patch_size, self.grid[1] * self.patch_size))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = PatchEmbed(self.embed_dim, self.patch_size, name="patch_embed", **kw)(images)  # [B, N, C]
    x = nn.Dropout(self.proj_drop_rate)(_pos_embed(self, x), deterministic=not train)
    x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    out = {}
    for i in range(self.depth):
      x = GFNetBlock(self.grid, self.mlp_ratio, drop_rate=self.proj_drop_rate, drop_path_rate=float(rates[i]),
                     train=train, name=f"blocks_{i}", **kw)(x)
      out[f"block{i}"] = x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
    return _head(self, x, out, train)


class GFNetPyramid(nn.Module):
  """Hierarchical GFNet (GFNet-H) classifier on NHWC images; the official `GFNetPyramid`. A stride-`patch_size`
  patch embedding plus a position embedding, then four stages of LayerScale blocks, each after the first entered
  through a stride-2 patch merging (`patch_embed_{s}`, the official `DownLayer`); stochastic depth grows linearly
  over all blocks. The official model builds but never applies a position dropout: none here."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224  # the only input size: the filters are sized by its stage grids
  in_chans: int = 3
  patch_size: int = 4
  embed_dims: Sequence[int] = (64, 128, 256, 512)
  depths: Sequence[int] = (3, 3, 10, 3)
  mlp_ratios: Sequence[float] = (4.0, 4.0, 4.0, 4.0)
  layer_scale_init: float = 1e-3  # the official `init_values` (GFNet-H-S: 1e-5, -B: 1e-6)
  drop_rate: float = 0.0  # before the head (the official `dropcls`)
  proj_drop_rate: float = 0.0  # inside the MLPs (the official `drop_rate`)
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def grids(self) -> list[tuple[int, int]]:
    """Each stage's token grid: the input divided by `patch_size`, halved after each stage."""
    h, w = _pair(self.img_size)
    return [(h // self.patch_size >> s, w // self.patch_size >> s) for s in range(len(self.depths))]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    n = len(self.depths)
    for field in ("embed_dims", "mlp_ratios"):
      if len(getattr(self, field)) != n:
        raise config_error(self, field, getattr(self, field), f"one value per stage ({n}, as depths)")
    if n < 1 or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "one positive block count per stage")
    stride = self.patch_size << (n - 1)
    h, w = _pair(self.img_size)
    if h % stride or w % stride or min(h, w) < stride:
      raise config_error(self, "img_size", self.img_size,
                         f"positive multiples of {stride} (patch_size={self.patch_size} x 2 per later stage)")
    check_rates(self, ("drop_rate", "proj_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    grids = self.grids()
    _check_input(self, images, (grids[0][0] * self.patch_size, grids[0][1] * self.patch_size))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    x, out, k = images, {}, 0
    for s, (grid, dim, depth) in enumerate(zip(grids, self.embed_dims, self.depths)):
      if s == 0:
        x = PatchEmbed(dim, self.patch_size, name="patch_embed_0", **kw)(x)  # [B, h0 * w0, C0]
        x = _pos_embed(self, x)
      else:  # [B, h, w, C] -> [B, h / 2 * w / 2, C']
        x = PatchEmbed(dim, 2, name=f"patch_embed_{s}", **kw)(x)
      x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
      for j in range(depth):
        x = GFNetBlock(grid, self.mlp_ratios[s], self.layer_scale_init, self.proj_drop_rate, float(rates[k]),
                       train, name=f"blocks_{s}_{j}", **kw)(x)
        x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
        k += 1
      out[f"stage{s}"] = x = x.reshape(x.shape[0], grid[0], grid[1], dim)  # [B, h, w, C]
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    return _head(self, x, out, train)


def _register(name, cls, **arch):
  """Registers `name` as `cls(**arch)` at 224 px (crop 0.9, ImageNet mean/std, as the official `_cfg`)."""
  register_variant(cls, name, crop_pct=0.9, **arch)


for size, (dim, depth) in dict(ti=(256, 12), xs=(384, 12), s=(384, 19), b=(512, 19)).items():
  _register(f"gfnet_{size}_224", GFNet, embed_dim=dim, depth=depth)
_register("gfnet_h_ti_224", GFNetPyramid, embed_dims=(64, 128, 256, 512), depths=(3, 3, 10, 3), layer_scale_init=1e-3)
_register("gfnet_h_s_224", GFNetPyramid, embed_dims=(96, 192, 384, 768), depths=(3, 3, 10, 3), layer_scale_init=1e-5)
_register("gfnet_h_b_224", GFNetPyramid, embed_dims=(96, 192, 384, 768), depths=(3, 3, 27, 3), layer_scale_init=1e-6)
