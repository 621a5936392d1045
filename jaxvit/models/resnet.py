"""ResNet (He et al. 2015, arXiv:1512.03385) with the "Bag of Tricks" stems (arXiv:1812.01187, sec. 4)
and ResNeXt's grouped bottlenecks (arXiv:1611.05431); timm's `resnet.py` is the file followed.

Plain `resnetN` is torchvision's ResNet (v1.5: the stride on the 3x3 conv; 7x7 stem); `resnetNd` has
the deep 3x3 stem and an average-pool downsample shortcut, `resnetNt` the tiered deep stem. Parameter
and batch-stat names mirror timm's (`conv1`, `bn1`, `layer1_0/conv1`, ...) so weights convert one to
one (`jaxvit.convert`). Returns `(logits, out)`; `out` holds `stage0` ... `stage3` feature
maps `[B, H, W, C]`, `pre_logits` `[B, num_features]` and `logits`. BatchNorm keeps `batch_stats`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.layers import ClassifierHead, ConvBN, avg_pool_ceil, batch_norm, conv2d
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

BLOCKS = ("basic", "bottleneck")
STEMS = ("", "deep", "deep_tiered")
EXPANSION = {"basic": 1, "bottleneck": 4}


class Block(nn.Module):
  """A residual block: `basic` (two 3x3 convs) or `bottleneck` (1x1 -> 3x3 grouped -> 1x1, x4 wide);
  its last BatchNorm starts at zero, as timm's `zero_init_last`. Where the shape changes, the
  shortcut `downsample` is a strided 1x1 conv + BN, or with `avg_down` (ResNet-D) a 2x2 average
  pool, then the 1x1 conv + BN."""
  kind: str
  planes: int
  stride: int = 1
  cardinality: int = 1
  base_width: int = 64
  avg_down: bool = False
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out_chs = self.planes * EXPANSION[self.kind]
    if self.kind == "basic":
      convs = [(self.planes, 3, self.stride, 1), (out_chs, 3, 1, 1)]
    else:
      width = int(self.planes * self.base_width / 64) * self.cardinality
      convs = [(width, 1, 1, 1), (width, 3, self.stride, self.cardinality), (out_chs, 1, 1, 1)]
    y = x
    for i, (features, kernel, stride, groups) in enumerate(convs, 1):
      y = conv2d(features, kernel, stride, groups, name=f"conv{i}", **kw)(y)
      y = batch_norm(self.train, zero_init=i == len(convs), name=f"bn{i}", **kw)(y)
      y = nn.relu(y) if i < len(convs) else y
    if self.stride != 1 or x.shape[-1] != out_chs:
      pool = self.avg_down and self.stride > 1
      x = ConvBN(out_chs, 1, 1 if self.avg_down else self.stride, act=False, train=self.train, name="downsample",
                 **kw)(avg_pool_ceil(x) if pool else x)
    return nn.relu(x + layers.drop_path(self, y, drop_path_rate, train=self.train))


class ResNet(nn.Module):
  """ResNet / ResNet-C/D/S/T / Wide ResNet / ResNeXt classifier on NHWC images; timm's `ResNet`.

  Convolutions take any input size; `img_size` is the reference resolution (params, FLOPs, bench).
  """
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  block: str = "bottleneck"  # one of BLOCKS
  depths: Sequence[int] = (3, 4, 6, 3)
  channels: Sequence[int] = (64, 128, 256, 512)
  cardinality: int = 1  # groups of the bottleneck's 3x3 conv (ResNeXt)
  base_width: int = 64  # bottleneck width per group: planes * base_width / 64
  stem_type: str = ""  # one of STEMS: "" = 7x7 conv; "deep" = three 3x3 convs; "deep_tiered" likewise
  stem_width: int = 64  # deep stems: width of the first 3x3 convs (the stem ends at 2 x stem_width)
  avg_down: bool = False  # average-pool shortcut (ResNet-D)
  drop_rate: float = 0.0  # before the head
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.channels[-1] * EXPANSION[self.block]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if self.block not in BLOCKS:
      raise config_error(self, "block", self.block, BLOCKS)
    if self.stem_type not in STEMS:
      raise config_error(self, "stem_type", self.stem_type, STEMS)
    if len(self.depths) != 4 or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "four stage depths >= 1")
    if len(self.channels) != 4:
      raise config_error(self, "channels", self.channels, "four stage widths")
    if self.block == "basic" and (self.cardinality, self.base_width) != (1, 64):
      raise config_error(self, "cardinality, base_width", (self.cardinality, self.base_width),
                         "(1, 64) for block='basic'")
    check_rates(self, ("drop_rate", "drop_path_rate"))

  def _stem(self, x, train):
    """`[B, H, W, C] -> [B, H / 4, W / 4, 64 or 2 x stem_width]`: conv(s), BN, ReLU, 3x3 max pool."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.stem_type:
      first = 3 * (self.stem_width // 4) if self.stem_type == "deep_tiered" else self.stem_width
      widths = (first, self.stem_width, 2 * self.stem_width)
      for i, width in enumerate(widths):
        x = conv2d(width, 3, 2 if i == 0 else 1, name=f"stem_conv{i}", **kw)(x)
        if i < 2:
          x = nn.relu(batch_norm(train, name=f"stem_bn{i}", **kw)(x))
    else:
      x = conv2d(64, 7, 2, name="conv1", **kw)(x)
    x = nn.relu(batch_norm(train, name="bn1", **kw)(x))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = self._stem(images.astype(self.dtype), train)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    out, index = {}, 0
    for stage, (depth, planes) in enumerate(zip(self.depths, self.channels)):
      for i in range(depth):
        x = Block(self.block, planes, 2 if stage > 0 and i == 0 else 1, self.cardinality, self.base_width,
                  self.avg_down, train, name=f"layer{stage + 1}_{i}", **kw)(x, float(rates[index]))
        index += 1
      x = nn.with_logical_constraint(x, ("batch", None, None, None))
      out[f"stage{stage}"] = x
    out["pre_logits"], out["logits"] = ClassifierHead(self.num_classes, self.drop_rate, name="head", **kw)(x, train)
    return out["logits"], out


def _register(name, crop_pct=0.875, img_size=224, **arch):
  """Registers `name` as a `ResNet` with architecture fields `arch` and timm's default eval crop."""
  register_variant(ResNet, name, crop_pct=crop_pct, img_size=img_size, **arch)


_DEPTHS = {18: (2, 2, 2, 2), 26: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
           152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
_D = dict(stem_type="deep", stem_width=32, avg_down=True)  # ResNet-D
_T = dict(stem_type="deep_tiered", stem_width=32, avg_down=True)  # ResNet-T

# crop_pct / img_size: timm's default pretrained weights for each name (a1 / a1h: 0.95)
def _block(n):
  return "basic" if n in (18, 34) else "bottleneck"


for n, crop in ((18, 0.95), (34, 0.95), (26, 0.875), (50, 0.95), (101, 0.95), (152, 0.95), (200, 0.875)):
  _register(f"resnet{n}", crop, block=_block(n), depths=_DEPTHS[n])
for n, crop, size in ((18, 0.875, 224), (34, 0.875, 224), (26, 0.875, 224), (50, 0.875, 224), (101, 0.95, 256),
                      (152, 0.95, 256), (200, 0.95, 256)):
  _register(f"resnet{n}d", crop, size, block=_block(n), depths=_DEPTHS[n], **_D)
_register("resnet10t", 0.875, 176, block="basic", depths=(1, 1, 1, 1), **_T)
_register("resnet14t", 0.875, 176, depths=(1, 1, 1, 1), **_T)
_register("resnet26t", 0.94, 256, depths=_DEPTHS[26], **_T)
_register("resnet50t", 0.875, 224, depths=_DEPTHS[50], **_T)
_register("wide_resnet50_2", 0.875, base_width=128)
_register("resnext50_32x4d", 0.95, cardinality=32, base_width=4)
