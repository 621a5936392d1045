"""AS-MLP (Lian et al. 2022, "AS-MLP: An Axial Shifted MLP Architecture for Vision", arXiv:2107.08391); timm has
no AS-MLP, the official svip-lab/AS-MLP `models/as_mlp.py` @dd1eb4f7 (configs `as_*_patch4_shift5_224.yaml`) is
the file followed.

A Swin-like four-stage pyramid on NHWC maps with GroupNorm(1) everywhere: a 4x4 / 4 patch embedding + norm, stages
of `x + AxialShift(GN(x))` (sec. 3.2, `jaxvit.layers.axial_shift`), `x + MLP(GN(x))` (1x1 convolutions), a patch
merging (2x2 neighbours concatenated, GN, bias-free 1x1 conv to 2C) after every stage but the last, a final GN,
global average pooling and a linear head. Parameter names mirror the official modules (`patch_embed`,
`layers_{i}/blocks_{j}`, `layers_{i}/downsample`, `norm`, `head`). The inputs' sides must be multiples of
`patch_size * 2 ** (stages - 1)` (the official patch merging asserts even maps). Returns `(logits, out)`; `out`
holds `stage0..3` (before each patch merging) and `pre_logits`.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.axial_shift import AxialShift, group_norm
from jaxvit.layers.conv import linear_head
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, trunc_normal_02, with_axes, zeros
from jaxvit.layers.mlp import Mlp
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error


class AxialShiftedBlock(nn.Module):
  """`x + DropPath(AxialShift(GN(x)))`, then `x + DropPath(MLP(GN(x)))`; the official `AxialShiftedBlock`."""
  shift_size: int = 5
  mlp_ratio: float = 4.0
  drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = AxialShift(self.shift_size, name="axial_shift", **kw)(group_norm(name="norm1", **kw)(x))
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.drop_rate, name="mlp", **kw)(
        group_norm(name="norm2", **kw)(x), train=self.train)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class PatchMerging(nn.Module):
  """`[B, H, W, C] -> [B, H / 2, W / 2, 2C]`: the 2x2 neighbours in the official order (x0 (0, 0), x1 (1, 0),
  x2 (0, 1), x3 (1, 1) as (row, column)) concatenated, GN (`norm`), a bias-free 1x1 conv (`reduction`)."""
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x.shape[-1]
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    return dense(2 * c, ("embed", "embed"), use_bias=False, name="reduction", **kw)(group_norm(name="norm", **kw)(x))


class ASMLP(nn.Module):
  """AS-MLP classifier on NHWC images."""
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  shift_size: int = 5
  mlp_ratio: float = 4.0
  patch_size: int = 4
  num_classes: int = 1000
  img_size: int = 224
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dim * 2 ** (len(self.depths) - 1)

  @property
  def stride(self) -> int:
    return self.patch_size * 2 ** (len(self.depths) - 1)

  def validate(self):
    if self.shift_size < 1 or self.shift_size % 2 == 0:
      raise config_error(self, "shift_size", self.shift_size, "odd integers >= 1")
    if not self.depths or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "one or more stages of >= 1 blocks")
    if self.img_size % self.stride:
      raise config_error(self, "img_size", self.img_size, f"multiples of {self.stride} (patch_size * 2 ** "
                         f"(stages - 1): every patch merging halves an even map)")
    check_rates(self, ("drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if images.shape[1] % self.stride or images.shape[2] % self.stride:
      raise ValueError(f"ASMLP: input {images.shape[1]}x{images.shape[2]}; accepted: sides that are multiples of "
                       f"{self.stride} (patch_size * 2 ** (stages - 1))")
    p = self.patch_size
    x = nn.Conv(self.embed_dim, (p, p), strides=p, padding="VALID", name="patch_embed_proj",
                kernel_init=with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")),
                bias_init=with_axes(zeros, ("conv_out",)), **kw)(images.astype(self.dtype))
    x = group_norm(name="patch_embed_norm", **kw)(x)
    x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
    total, out, index = sum(self.depths), {}, 0
    for i, depth in enumerate(self.depths):
      for j in range(depth):
        rate = self.drop_path_rate * index / max(total - 1, 1)  # torch.linspace(0, rate, total)
        x = AxialShiftedBlock(self.shift_size, self.mlp_ratio, self.drop_rate, train, name=f"layers_{i}_blocks_{j}",
                              **kw)(x, rate)
        index += 1
      out[f"stage{i}"] = x
      if i < len(self.depths) - 1:
        x = PatchMerging(name=f"layers_{i}_downsample", **kw)(x)
    x = group_norm(name="norm", **kw)(x)
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, 0.0, train, **kw)
    return out["logits"], out


def _register(name, embed_dim, depths):
  """The official `as_{tiny,small,base}_patch4_shift5_224` configs (the Swin code base's crop 0.875)."""
  register_variant(ASMLP, name, embed_dim=embed_dim, depths=depths)


_register("as_mlp_tiny", 96, (2, 2, 6, 2))
_register("as_mlp_small", 96, (2, 2, 18, 2))
_register("as_mlp_base", 128, (2, 2, 18, 2))
