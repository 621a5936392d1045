"""Hire-MLP (Guo et al. 2022, "Hire-MLP: Vision MLP via Hierarchical Rearrangement", arXiv:2108.13341); timm has
no Hire-MLP, the official ggjy/Hire-Wave-MLP.pytorch `mlp_based/hire_mlp.py` @7ef7ddd is the file followed.

A four-stage pyramid of BatchNorm blocks on NHWC maps: an overlapping patch embedding (conv 7x7 / 4, padding 2,
BatchNorm, ReLU), stages of `x + HireMLP(BN(x))`, `x + MLP(BN(x))` (`jaxvit.layers.hire_mixer`; block j of a stage
shifts its regions by `(j mod step_stride) * step_dilation` lines), a conv 3x3 / 2 + BatchNorm + ReLU between
stages, a final BatchNorm, global average pooling and a linear head. Parameter names mirror the official modules
(`patch_embed`, `network_{k}_{j}` for block j of `network[k]`, `network_{k}` for the downsamplings, `norm`,
`head`); BatchNorm statistics live in `batch_stats`. Returns `(logits, out)`; `out` holds `stage0..3` and
`pre_logits`.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.conv import batch_norm, linear_head
from jaxvit.layers.drop import drop_path
from jaxvit.layers.hire_mixer import HireMLP
from jaxvit.layers.init import trunc_normal_02, with_axes
from jaxvit.layers.mlp import Mlp
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error


class ConvBNReLU(nn.Module):
  """Conv (with bias) -> BatchNorm -> ReLU; the official `PatchEmbedOverlapping` / `Downsample` (`proj`, `norm`)."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    k, p = self.kernel_size, self.padding
    x = nn.Conv(self.features, (k, k), strides=self.stride, padding=((p, p), (p, p)), name="proj",
                kernel_init=with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")), **kw)(x)
    return nn.relu(batch_norm(self.train, name="norm", **kw)(x))


class HireBlock(nn.Module):
  """`x + DropPath(HireMLP(BN(x)))`, then `x + DropPath(MLP(BN(x)))`; the official `HireBlock`."""
  pixel: int
  step: int
  mlp_ratio: float = 4.0
  drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = HireMLP(self.pixel, self.step, self.train, name="attn", **kw)(batch_norm(self.train, name="norm1", **kw)(x))
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.drop_rate, name="mlp", **kw)(
        batch_norm(self.train, name="norm2", **kw)(x), train=self.train)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class HireMLPNet(nn.Module):
  """Hire-MLP classifier on NHWC images (any size: the regions are padded circularly)."""
  depths: Sequence[int] = (2, 2, 4, 2)
  embed_dims: Sequence[int] = (64, 128, 320, 512)
  mlp_ratios: Sequence[float] = (4, 4, 4, 4)
  pixel: Sequence[int] = (4, 3, 3, 2)
  step_stride: Sequence[int] = (2, 2, 3, 2)
  step_dilation: Sequence[int] = (2, 2, 1, 1)
  num_classes: int = 1000
  img_size: int = 224
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def validate(self):
    n = len(self.depths)
    for field in ("embed_dims", "mlp_ratios", "pixel", "step_stride", "step_dilation"):
      if len(getattr(self, field)) != n:
        raise config_error(self, field, getattr(self, field), f"one entry per stage ({n}, as depths)")
    for field in ("pixel", "step_stride"):
      if min(getattr(self, field)) < 1:
        raise config_error(self, field, getattr(self, field), "integers >= 1")
    check_rates(self, ("drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvBNReLU(self.embed_dims[0], 7, 4, 2, train, name="patch_embed", **kw)(images.astype(self.dtype))
    total, out, index = sum(self.depths), {}, 0
    for i, depth in enumerate(self.depths):
      if i:
        x = ConvBNReLU(self.embed_dims[i], 3, 2, 1, train, name=f"network_{2 * i - 1}", **kw)(x)
      for j in range(depth):
        step = (j % self.step_stride[i]) * self.step_dilation[i]
        rate = self.drop_path_rate * index / max(total - 1, 1)  # the official per-block rates
        x = HireBlock(self.pixel[i], step, self.mlp_ratios[i], self.drop_rate, train, name=f"network_{2 * i}_{j}",
                      **kw)(x, rate)
        index += 1
      out[f"stage{i}"] = x
    x = batch_norm(train, name="norm", **kw)(x)
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, 0.0, train, **kw)
    return out["logits"], out


def _register(name, depths, embed_dims=(64, 128, 320, 512)):
  """The official `hire_mlp_*`: crop 0.9, ImageNet mean / std."""
  register_variant(HireMLPNet, name, crop_pct=0.9, depths=depths, embed_dims=embed_dims)


_register("hire_mlp_tiny", (2, 2, 4, 2))
_register("hire_mlp_small", (3, 4, 10, 3))
_register("hire_mlp_base", (4, 6, 24, 3))
_register("hire_mlp_large", (4, 6, 24, 3), (96, 192, 384, 768))
