"""SwiftFormer (Shaker et al. 2023, arXiv:2303.15446): a conv network with efficient additive attention in every stage.

A two-conv stride-4 stem, then four stages (stride-2 3x3 conv + BatchNorm `downsample` from the second on). Every
block of a stage but the last is a `ConvEncoder`: x + LS(pw2(GELU(pw1(BN(dw3x3(x)))))), an inverted bottleneck
4x wide; the last is the SwiftFormer encoder: a 1x-wide `local_representation` of the same form, then
x + LS(EfficientAdditiveAttention(x)) (`layers.additive_attention`) and x + LS(Mlp(BN(x))). As DeiT, two
classifiers (`head`, `head_dist`, trained against labels and a teacher) read the BatchNorm-ed, pooled features;
`logits` is their mean, `out` also holds `logits_cls` and `logits_dist`. timm's `swiftformer.py` is the file
followed; parameter and batch-stat names mirror it (`stem_0`, `stages_1/downsample/proj`,
`stages_0/blocks_2/local_representation/dwconv`, `attn/w_g`, `linear/fc1`). Returns `(logits, out)`; `out` holds
`stage0` ... `stage3` `[B, H, W, C]` and `pre_logits`. BatchNorm keeps `batch_stats`. Depthwise convolutions are
shifted multiply-adds (`layers.depthwise_conv`: much faster than XLA's on CPU).
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.additive_attention import EfficientAdditiveAttention
from jaxvit.layers.conv import batch_norm
from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, trunc_normal_02, with_axes, zeros
from jaxvit.layers.layer_scale import LayerScale
from jaxvit.layers.mlp import gelu
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error


def _conv(features, *, name, **kw):
  """torch's `Conv2d(k=3, stride=2, padding=1)` with bias on NHWC images (timm: truncated-normal 0.02 init)."""
  return nn.Conv(features, (3, 3), strides=2, padding=((1, 1), (1, 1)), name=name,
                 kernel_init=with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")),
                 bias_init=with_axes(zeros, ("conv_out",)), **kw)


class ConvEncoder(nn.Module):
  """x + DropPath(LS(pwconv2(GELU(pwconv1(BN(dwconv3x3(x))))))), LayerScale initialised to 1; timm's `ConvEncoder`
  (`hidden_dim` = 4 x dim) and `LocalRepresentation` (`hidden_dim` = dim, no drop path)."""
  hidden_dim: int
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float = 0.0):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = DepthwiseConv(3, name="dwconv", **kw)(x)
    y = batch_norm(self.train, name="norm", **kw)(y)
    y = gelu(dense(self.hidden_dim, ("embed", "mlp"), name="pwconv1", **kw)(y))
    y = dense(x.shape[-1], ("mlp", "embed"), name="pwconv2", **kw)(y)
    y = LayerScale(1.0, self.param_dtype, name="layer_scale")(y)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class Mlp(nn.Module):
  """BN -> fc1 -> GELU -> dropout -> fc2 -> dropout (1x1 convs as matmuls); timm's SwiftFormer `Mlp`."""
  hidden_dim: int
  drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out_dim = x.shape[-1]
    x = batch_norm(self.train, name="norm1", **kw)(x)
    x = gelu(dense(self.hidden_dim, ("embed", "mlp"), name="fc1", **kw)(x))
    x = nn.Dropout(self.drop_rate)(x, deterministic=not self.train)
    x = dense(out_dim, ("mlp", "embed"), name="fc2", **kw)(x)
    return nn.Dropout(self.drop_rate)(x, deterministic=not self.train)


class SwiftFormerEncoder(nn.Module):
  """The SwiftFormer encoder (paper Fig. 3; timm's `Block`): local representation, then additive attention and
  the MLP on residual branches with LayerScale (`layer_scale_1`, `layer_scale_2`)."""
  mlp_ratio: float = 4.0
  layer_scale_init_value: float = 1e-5
  proj_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = x.shape
    x = ConvEncoder(c, self.train, name="local_representation", **kw)(x)
    y = EfficientAdditiveAttention(c, name="attn", **kw)(x.reshape(b, h * w, c)).reshape(b, h, w, c)
    y = LayerScale(self.layer_scale_init_value, self.param_dtype, name="layer_scale_1")(y)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(c * self.mlp_ratio), self.proj_drop_rate, self.train, name="linear", **kw)(x)
    y = LayerScale(self.layer_scale_init_value, self.param_dtype, name="layer_scale_2")(y)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class Embedding(nn.Module):
  """Downsampling: a 3x3 stride-2 conv `proj` then BatchNorm `norm`; timm's `Embedding`."""
  dim: int
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    return batch_norm(self.train, name="norm", **kw)(_conv(self.dim, name="proj", **kw)(x))


class Stage(nn.Module):
  """[`downsample`], then `depth - 1` ConvEncoders and a SwiftFormer encoder (`blocks_{j}`)."""
  dim: int
  depth: int
  downsample: bool
  mlp_ratio: float = 4.0
  layer_scale_init_value: float = 1e-5
  proj_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, rates):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.downsample:
      x = Embedding(self.dim, self.train, name="downsample", **kw)(x)
    for j in range(self.depth - 1):
      x = ConvEncoder(int(self.mlp_ratio * self.dim), self.train, name=f"blocks_{j}", **kw)(x, float(rates[j]))
    return SwiftFormerEncoder(self.mlp_ratio, self.layer_scale_init_value, self.proj_drop_rate, self.train,
                              name=f"blocks_{self.depth - 1}", **kw)(x, float(rates[-1]))


class SwiftFormer(nn.Module):
  """SwiftFormer classifier with a distillation head on NHWC images; timm's `SwiftFormer`.

  Convolutions take any input size; `img_size` is the reference resolution (params, FLOPs, bench).
  """
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  depths: Sequence[int] = (3, 3, 6, 4)  # timm's `layers`: ConvEncoders then one SwiftFormer encoder per stage
  embed_dims: Sequence[int] = (48, 56, 112, 220)
  mlp_ratio: float = 4.0
  layer_scale_init_value: float = 1e-5
  proj_drop_rate: float = 0.0  # dropout in the encoders' MLPs
  drop_rate: float = 0.0  # before the classifiers
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if len(self.depths) < 1 or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "one or more stage depths >= 1")
    if len(self.embed_dims) != len(self.depths):
      raise config_error(self, "embed_dims", self.embed_dims, f"{len(self.depths)} stage widths (one per depth)")
    check_rates(self, ("proj_drop_rate", "drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = images.astype(self.dtype)
    # stem: Sequential(conv, BN, ReLU, conv, BN, ReLU); [B, H, W, 3] -> [B, H / 4, W / 4, embed_dims[0]]
    for i, width in ((0, self.embed_dims[0] // 2), (3, self.embed_dims[0])):
      x = _conv(width, name=f"stem_{i}", **kw)(x)
      x = nn.relu(batch_norm(train, name=f"stem_{i + 1}", **kw)(x))
    rates = np.split(np.linspace(0.0, self.drop_path_rate, sum(self.depths)), np.cumsum(self.depths)[:-1])
    out = {}
    for i, (depth, dim) in enumerate(zip(self.depths, self.embed_dims)):
      x = Stage(dim, depth, i > 0, self.mlp_ratio, self.layer_scale_init_value, self.proj_drop_rate, train,
                name=f"stages_{i}", **kw)(x, rates[i])
      x = nn.with_logical_constraint(x, ("batch", None, None, None))
      out[f"stage{i}"] = x
    pooled = jnp.mean(batch_norm(train, name="norm", **kw)(x), axis=(1, 2))
    out["pre_logits"] = pooled
    if self.num_classes == 0:
      out["logits"] = pooled
      return pooled, out
    pooled = nn.Dropout(self.drop_rate)(pooled, deterministic=not train)
    head = lambda name: dense(self.num_classes, ("embed", "classes"), kernel_init=zeros, name=name, **kw)(pooled)
    # distillation as DeiT (arXiv:2012.12877, sec. 4): the class and distillation heads' mean
    out["logits_cls"], out["logits_dist"] = head("head"), head("head_dist")
    out["logits"] = (out["logits_cls"] + out["logits_dist"]) / 2
    return out["logits"], out


def _register(name, **arch):
  register_variant(SwiftFormer, name, crop_pct=0.95, **arch)


_register("swiftformer_xs", depths=(3, 3, 6, 4), embed_dims=(48, 56, 112, 220))
_register("swiftformer_s", depths=(3, 3, 9, 6), embed_dims=(48, 64, 168, 224))
_register("swiftformer_l1", depths=(4, 3, 10, 5), embed_dims=(48, 96, 192, 384))
_register("swiftformer_l3", depths=(4, 4, 12, 6), embed_dims=(64, 128, 320, 512))
