"""S2-MLP (Yu et al., "S2-MLP: Spatial-Shift MLP Architecture for Vision", WACV 2022, arXiv:2106.07477) and
S2-MLPv2 (Yu et al., "S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision", arXiv:2108.01072). timm has
neither and the authors (Baidu) released no code: the architecture follows the papers, with the unofficial
liuruiyang98/Jittor-MLP `models_pytorch/s2_mlp_v1.py` / `s2_mlp_v2.py` @5e27ae3 (the survey arXiv:2111.04060's
reimplementation) for what the papers leave open; `tests/published.py` says which source fixes which detail.

Stages of NHWC maps: a non-overlapping patch embedding (`patch_embed_{i}`, a stride-p convolution computed as a
matmul; stage 0 embeds pixels, later stages merge p x p tokens), then blocks `x + Mixer(LN(x))`,
`x + MLP(LN(x))` (`blocks_{i}_{j}`: `norm1`, `attn`, `norm2`, `mlp`), global average pooling and a linear `head`
(no final norm, as the S2-MLP paper's Fig. 1). The mixer is S2-MLP's spatial-shift module (`mixer="shift"`) or
S2-MLPv2's split-shift-fuse module (`mixer="split_shift"`), both in `jaxvit.layers.spatial_shift`. The shifts are
local and parameter-free, so any input size divisible by the total patch size works. Returns `(logits, out)`;
`out` holds `stage{i}` maps, `pre_logits` and `logits`.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.conv import linear_head
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import layer_norm
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.layers.spatial_shift import SpatialShiftMLP, SplitShiftMLP
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

MIXERS = ("shift", "split_shift")


class S2Block(nn.Module):
  """`x + DropPath(Mixer(LN(x)))`, then `x + DropPath(MLP(LN(x)))` (S2-MLP Sec. 3.2, Fig. 1; the MLP is
  `fc2(GELU(fc1(x)))` with hidden width `mlp_ratio * C`, the paper's expansion ratio r)."""
  mixer: str = "shift"
  mlp_ratio: float = 4.0
  split_hidden_ratio: float = 0.25
  drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.mixer == "shift":
      mixer = SpatialShiftMLP(name="attn", **kw)
    else:
      mixer = SplitShiftMLP(self.split_hidden_ratio, name="attn", **kw)
    x = x + drop_path(self, mixer(layer_norm(1e-5, name="norm1", **kw)(x)), drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.drop_rate, name="mlp", **kw)(
        layer_norm(1e-5, name="norm2", **kw)(x), train=self.train)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class S2MLP(nn.Module):
  """S2-MLP / S2-MLPv2 classifier on NHWC images whose sides are multiples of `prod(patch_sizes)`."""
  patch_sizes: Sequence[int] = (16,)
  embed_dims: Sequence[int] = (768,)
  depths: Sequence[int] = (12,)
  mlp_ratios: Sequence[float] = (4,)
  mixer: str = "shift"  # one of MIXERS
  split_hidden_ratio: float = 0.25  # split_shift: split attention's hidden width / C (the paper's c-bar)
  num_classes: int = 1000
  img_size: int = 224
  drop_rate: float = 0.0  # inside the MLPs
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  @property
  def total_stride(self) -> int:
    stride = 1
    for p in self.patch_sizes:
      stride *= p
    return stride

  def validate(self):
    n = len(self.depths)
    for field in ("patch_sizes", "embed_dims", "mlp_ratios"):
      if len(getattr(self, field)) != n:
        raise config_error(self, field, getattr(self, field), f"one entry per stage ({n}, as depths)")
    if self.mixer not in MIXERS:
      raise config_error(self, "mixer", self.mixer, MIXERS)
    if min(self.patch_sizes) < 1:
      raise config_error(self, "patch_sizes", self.patch_sizes, "integers >= 1")
    if min(self.embed_dims) < 4:
      raise config_error(self, "embed_dims", self.embed_dims, "integers >= 4 (four shifted channel groups)")
    if self.mixer == "split_shift" and int(min(self.embed_dims) * self.split_hidden_ratio) < 1:
      raise config_error(self, "split_hidden_ratio", self.split_hidden_ratio,
                         f"a ratio giving a hidden width >= 1 for embed_dims={tuple(self.embed_dims)}")
    if self.img_size % self.total_stride:
      raise config_error(self, "img_size", self.img_size, f"multiples of prod(patch_sizes)={self.total_stride}")
    check_rates(self, ("drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    h, w = images.shape[1:3]
    if h % self.total_stride or w % self.total_stride:
      raise config_error(self, "img_size", (h, w), f"input sides that are multiples of prod(patch_sizes)="
                         f"{self.total_stride}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x, out = images.astype(self.dtype), {}
    total, index = sum(self.depths), 0
    for i, (patch, dim, depth) in enumerate(zip(self.patch_sizes, self.embed_dims, self.depths)):
      b, h, w, _ = x.shape
      x = PatchEmbed(dim, patch, name=f"patch_embed_{i}", **kw)(x).reshape(b, h // patch, w // patch, dim)
      for j in range(depth):
        rate = self.drop_path_rate * index / max(total - 1, 1)  # linear rule over all blocks
        x = S2Block(self.mixer, self.mlp_ratios[i], self.split_hidden_ratio, self.drop_rate, train,
                    name=f"blocks_{i}_{j}", **kw)(x, rate)
        index += 1
      out[f"stage{i}"] = x
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, 0.0, train, **kw)
    return out["logits"], out


def _register(name, **fields):
  """Both papers evaluate at 224 px; crop 0.875 (timm's default: the papers do not state theirs)."""
  register_variant(S2MLP, name, crop_pct=0.875, **fields)


# S2-MLP Table 1: patch 16, hidden 768 / 384, depth 12 / 36, expansion ratio 4
_register("s2mlp_wide_224", embed_dims=(768,), depths=(12,))
_register("s2mlp_deep_224", embed_dims=(384,), depths=(36,))
# S2-MLPv2: ViP's 7x7-patch two-level pyramids (ViP-Small/7, ViP-Medium/7), expansion ratio 3
_register("s2mlpv2_small_224", patch_sizes=(7, 2), embed_dims=(192, 384), depths=(4, 14), mlp_ratios=(3, 3),
          mixer="split_shift")
_register("s2mlpv2_medium_224", patch_sizes=(7, 2), embed_dims=(256, 512), depths=(7, 17), mlp_ratios=(3, 3),
          mixer="split_shift")
