"""RegNetY (Radosavovic et al. 2020, "Designing Network Design Spaces", arXiv:2003.13678); timm's
`regnet.py` is the file followed.

A RegNet is a stem, four stages of X blocks (1x1 -> 3x3 group conv -> 1x1, residual) and a linear
head; RegNetY adds Squeeze-and-Excitation after the 3x3 conv (sec. 5). Widths grow by the
quantised linear rule of sec. 3.3 (`regnet_widths`: w0, wa, wm, depth). Parameter and batch-stat
names mirror timm's (`stem/conv`, `s1/b1/conv2/bn`, `s1/b1/se/fc1`, `head/fc`, ...) so weights
convert one to one (`jaxvit.convert`). Returns `(logits, out)` with `stage0` ... `stage3` feature
maps `[B, H, W, C]`, `pre_logits` `[B, num_features]` and `logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.layers import ClassifierHead, ConvBN, SqueezeExcite
from jaxvit.registry import register_model
from jaxvit.utils import check_rates, config_error


def regnet_widths(w0: int, wa: float, wm: float, depth: int, group_size: int, quant: int = 8):
  """Stage `(depths, widths, group_sizes)` from the RegNet parameters (arXiv:2003.13678, eqs. 2-4).

  Per-block widths u_j = w0 + wa * j (eq. 2) are snapped to w0 * wm^round(s_j) (eqs. 3-4), rounded
  to multiples of `quant`; equal widths form a stage. Each stage's group size is capped by its
  width and its width rounded to a multiple of it (timm's `adjust_widths_groups_comp`, bottleneck
  ratio 1). Float32 arithmetic, as timm computes it in torch.
  """
  u = np.arange(depth, dtype=np.float32) * np.float32(wa) + np.float32(w0)
  s = np.round(np.log(u / np.float32(w0)) / np.float32(np.log(wm)))
  w = (np.round(np.float32(w0) * np.power(np.float32(wm), s) / quant) * quant).astype(int)
  widths, depths = np.unique(w, return_counts=True)
  groups = [min(group_size, int(c)) for c in widths]
  widths = [int(round(c / g) * g) for c, g in zip(widths, groups)]
  return tuple(int(d) for d in depths), tuple(widths), tuple(groups)


class Bottleneck(nn.Module):
  """RegNet's X block (+ SE for Y): conv1 1x1, conv2 3x3 in groups of `group_size` channels (the
  stride is here), `se` on the bottleneck (its width `se_ratio` x the block's *input* width),
  conv3 1x1 (BN starting at zero), and a 1x1 conv + BN `downsample` shortcut where the shape changes."""
  out_chs: int
  stride: int
  group_size: int
  se_ratio: float
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(train=self.train, dtype=self.dtype, param_dtype=self.param_dtype)
    y = ConvBN(self.out_chs, 1, name="conv1", **kw)(x)
    y = ConvBN(self.out_chs, 3, self.stride, self.out_chs // self.group_size, name="conv2", **kw)(y)
    if self.se_ratio:
      y = SqueezeExcite(int(round(x.shape[-1] * self.se_ratio)), self.dtype, self.param_dtype, name="se")(y)
    y = ConvBN(self.out_chs, 1, act=False, zero_init=True, name="conv3", **kw)(y)
    if self.stride != 1 or x.shape[-1] != self.out_chs:
      x = ConvBN(self.out_chs, 1, self.stride, act=False, name="downsample", **kw)(x)
    return nn.relu(x + layers.drop_path(self, y, drop_path_rate, train=self.train))


class RegNet(nn.Module):
  """RegNetX / RegNetY classifier on NHWC images; timm's `RegNet` (post-activation, ReLU, BatchNorm).

  Convolutions take any input size; `img_size` is the reference resolution (params, FLOPs, bench).
  """
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  depths: Sequence[int] = (1, 1, 4, 7)
  widths: Sequence[int] = (24, 56, 152, 368)
  group_sizes: Sequence[int] = (8, 8, 8, 8)  # channels per group of each stage's 3x3 conv
  se_ratio: float = 0.25  # 0 = RegNetX
  stem_width: int = 32
  drop_rate: float = 0.0  # before the head
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.widths[-1]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    for field in ("depths", "widths", "group_sizes"):
      if len(getattr(self, field)) != 4:
        raise config_error(self, field, getattr(self, field), "four stage values")
    if min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "four stage depths >= 1")
    if any(group < 1 or width % group for width, group in zip(self.widths, self.group_sizes)):
      raise config_error(self, "group_sizes", self.group_sizes, f"divisors of the stage widths {tuple(self.widths)}")
    check_rates(self, ("drop_rate", "drop_path_rate", "se_ratio"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvBN(self.stem_width, 3, 2, train=train, name="stem", **kw)(images.astype(self.dtype))
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    starts = np.cumsum((0,) + tuple(self.depths))
    out = {}
    for stage, (depth, width, group) in enumerate(zip(self.depths, self.widths, self.group_sizes)):
      block = dict(out_chs=width, group_size=group, se_ratio=self.se_ratio, train=train, **kw)
      x = Stage(depth, block, tuple(rates[starts[stage]:starts[stage + 1]]), name=f"s{stage + 1}")(x)
      x = nn.with_logical_constraint(x, ("batch", None, None, None))
      out[f"stage{stage}"] = x
    out["pre_logits"], out["logits"] = ClassifierHead(self.num_classes, self.drop_rate, name="head", **kw)(x, train)
    return out["logits"], out


class Stage(nn.Module):
  """`depth` blocks `b1 ... b{depth}`; the first one strides by 2 (timm's `RegStage`)."""
  depth: int
  block: dict
  drop_path_rates: tuple

  @nn.compact
  def __call__(self, x):
    for i in range(self.depth):
      x = Bottleneck(stride=2 if i == 0 else 1, name=f"b{i + 1}", **self.block)(x, float(self.drop_path_rates[i]))
    return x


def _register(name, w0, wa, wm, depth, group_size, crop_pct, se_ratio=0.25):
  """Registers `name` as a `RegNet` from its RegNet parameters (timm's `model_cfgs`) and default crop."""
  depths, widths, groups = regnet_widths(w0, wa, wm, depth, group_size)
  arch = dict(depths=depths, widths=widths, group_sizes=groups, se_ratio=se_ratio)
  fn = lambda: RegNet(**arch)
  fn.__name__ = name
  fn.__doc__ = f"{name}: w0={w0}, wa={wa}, wm={wm}, depth={depth}, group_size={group_size} -> {arch}"
  register_model(fn, crop_pct=crop_pct)


# name: w0, wa, wm, depth, group_size (timm's `model_cfgs`), crop_pct of timm's default weights
_CFGS = {
    "regnety_002": (24, 36.44, 2.49, 13, 8, 0.875),
    "regnety_004": (48, 27.89, 2.09, 16, 8, 0.965),
    "regnety_006": (48, 32.54, 2.32, 15, 16, 0.875),
    "regnety_008": (56, 38.84, 2.4, 14, 16, 0.875),
    "regnety_016": (48, 20.71, 2.65, 27, 24, 0.965),
    "regnety_032": (80, 42.63, 2.66, 21, 24, 0.95),
    "regnety_040": (96, 31.41, 2.24, 22, 64, 0.95),
    "regnety_064": (112, 33.22, 2.27, 25, 72, 0.95),
    "regnety_080": (192, 76.82, 2.19, 17, 56, 0.95),
    "regnety_120": (168, 73.36, 2.37, 19, 112, 0.95),
    "regnety_160": (200, 106.23, 2.48, 18, 112, 0.95),
    "regnety_320": (232, 115.89, 2.53, 20, 232, 0.965),
}
for _name, _cfg in _CFGS.items():
  _register(_name, *_cfg)
