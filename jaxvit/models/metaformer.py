"""MetaFormer (Yu et al.): PoolFormer (arXiv:2111.11418) and PoolFormerV2 (MetaFormer Baselines, arXiv:2210.13452).

A MetaFormer block is X = X + TokenMixer(Norm(X)), then X = X + Mlp(Norm(X)) (arXiv:2111.11418, eq. 1-3), in four
stages behind a 7x7 stride-4 stem and 3x3 stride-2 downsampling convolutions. PoolFormer's token mixer is
`layers.pooling_mixer` (eq. 4); its norm is a GroupNorm with one group. V2 adds a bias-free LayerNorm to the stem
and the downsampling layers, StarReLU (s * relu(x)^2 + b) in the MLP and ResScale (a learned gain on the skip
branch) in the last two stages instead of LayerScale. The token mixer is a per-stage field (`token_mixers`), so
ConvFormer / CAFormer (separable conv, attention) are a new entry in `TOKEN_MIXERS`. timm's `metaformer.py` is the
file followed; parameter names mirror it (`stem/conv`, `stages_1/downsample/conv`, `stages_0/blocks_0/norm1`,
`layer_scale1`, `res_scale1`, `head/norm`, `head/fc`). Returns `(logits, out)`; `out` holds `stage0` ... `stage3`
`[B, H, W, C]`, `pre_logits` (pooled, then `head/norm`) and `logits`.
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, ones, trunc_normal_02, with_axes, zeros
from jaxvit.layers.mlp import gelu
from jaxvit.layers.pooling_mixer import pooling_mixer
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

TOKEN_MIXERS = ("pooling",)  # later: "sepconv" (ConvFormer), "attention" (CAFormer)
MLP_ACTS = ("gelu", "star_relu")
NORMS = ("group", "layer")  # GroupNorm with one group (timm's GroupNorm1), or LayerNorm over channels


def _conv(features, kernel, stride, padding, *, name, **kw):
  """torch's `Conv2d` with bias on NHWC images (timm initialises it truncated-normal 0.02)."""
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=((padding, padding), (padding, padding)),
                 kernel_init=with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")),
                 bias_init=with_axes(zeros, ("conv_out",)), name=name, **kw)


def _norm(kind: str, bias: bool, eps: float, *, name, **kw):
  """A `[B, H, W, C]` norm: `group` normalises each image over (H, W, C), `layer` each pixel over C."""
  axes = dict(scale_init=with_axes(ones, ("embed",)), bias_init=with_axes(zeros, ("embed",)))
  if kind == "group":
    return nn.GroupNorm(num_groups=1, epsilon=eps, use_bias=bias, name=name, **axes, **kw)
  return nn.LayerNorm(epsilon=eps, use_bias=bias, name=name, **axes, **kw)


class Scale(nn.Module):
  """A learned per-channel gain, `scale` initialised to `init_value`: LayerScale on a residual branch
  (CaiT, arXiv:2103.17239) or ResScale on the skip branch (arXiv:2110.09456); timm's `Scale`."""
  init_value: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", with_axes(lambda k, s, d: jnp.full(s, self.init_value, d), ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    return x * scale.astype(x.dtype)


class StarReLU(nn.Module):
  """StarReLU (arXiv:2210.13452, eq. 2): s * relu(x)^2 + b with learned scalars `scale` (1) and `bias` (0)."""
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (1,), self.param_dtype).astype(x.dtype)
    bias = self.param("bias", nn.initializers.zeros, (1,), self.param_dtype).astype(x.dtype)
    return scale * jnp.square(nn.relu(x)) + bias


class Mlp(nn.Module):
  """fc1 -> act -> dropout -> fc2 -> dropout on channels (timm's `Mlp(use_conv=True)`: 1x1 convs as matmuls)."""
  hidden_dim: int
  act: str = "gelu"  # one of MLP_ACTS
  use_bias: bool = True
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out_dim = x.shape[-1]
    x = dense(self.hidden_dim, ("embed", "mlp"), use_bias=self.use_bias, name="fc1", **kw)(x)
    x = gelu(x) if self.act == "gelu" else StarReLU(self.param_dtype, name="act")(x)
    x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
    x = dense(out_dim, ("mlp", "embed"), use_bias=self.use_bias, name="fc2", **kw)(x)
    return nn.Dropout(self.drop_rate)(x, deterministic=not train)


class MetaFormerBlock(nn.Module):
  """res_scale(x) + layer_scale(DropPath(token_mixer(norm(x)))), then the same with the MLP; timm's
  `MetaFormerBlock`. A missing `*_init_value` (None) leaves that gain out."""
  token_mixer: str = "pooling"
  pool_size: int = 3
  mlp_ratio: float = 4.0
  mlp_act: str = "gelu"
  mlp_bias: bool = True
  norm: str = "group"
  norm_bias: bool = True
  norm_eps: float = 1e-5
  layer_scale_init_value: Optional[float] = None
  res_scale_init_value: Optional[float] = None
  proj_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def _residual(self, x, y, index: int, rate: float):
    y = drop_path(self, y, rate, train=self.train)
    if self.layer_scale_init_value is not None:
      y = Scale(self.layer_scale_init_value, self.param_dtype, name=f"layer_scale{index}")(y)
    if self.res_scale_init_value is not None:
      x = Scale(self.res_scale_init_value, self.param_dtype, name=f"res_scale{index}")(x)
    return x + y

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: _norm(self.norm, self.norm_bias, self.norm_eps, name=name, **kw)
    y = norm("norm1")(x)
    if self.token_mixer == "pooling":
      y = pooling_mixer(y, self.pool_size)
    x = self._residual(x, y, 1, drop_path_rate)
    y = Mlp(int(self.mlp_ratio * x.shape[-1]), self.mlp_act, self.mlp_bias, self.proj_drop_rate, name="mlp",
            **kw)(norm("norm2")(x), self.train)
    return self._residual(x, y, 2, drop_path_rate)


class MetaFormerStage(nn.Module):
  """An optional `downsample` ([norm], 3x3 stride-2 conv, where the width changes), then `blocks_{j}`."""
  dim: int
  depth: int
  block: dict
  downsample_norm: bool = False
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, rates):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if x.shape[-1] != self.dim:
      x = Downsampling(self.dim, self.downsample_norm, name="downsample", **kw)(x)
    for j in range(self.depth):
      x = MetaFormerBlock(train=self.train, name=f"blocks_{j}", **self.block, **kw)(x, float(rates[j]))
    return x


class Downsampling(nn.Module):
  """[bias-free LayerNorm (eps 1e-6)] then a 3x3 stride-2 conv: `[B, H, W, C] -> [B, ceil(H / 2), ceil(W / 2), dim]`."""
  dim: int
  use_norm: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.use_norm:
      x = _norm("layer", False, 1e-6, name="norm", **kw)(x)
    return _conv(self.dim, 3, 2, 1, name="conv", **kw)(x)


class MetaFormer(nn.Module):
  """PoolFormer / PoolFormerV2 classifier on NHWC images; timm's `MetaFormer`.

  Convolutions and pooling take any input size; `img_size` is the reference resolution (params, FLOPs, bench).
  """
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  depths: Sequence[int] = (2, 2, 6, 2)
  dims: Sequence[int] = (64, 128, 320, 512)
  token_mixers: Sequence[str] = ("pooling",) * 4  # per stage, one of TOKEN_MIXERS
  pool_size: int = 3  # the pooling mixer's window (odd)
  mlp_ratio: float = 4.0
  mlp_act: str = "star_relu"  # one of MLP_ACTS; PoolFormer (v1): "gelu"
  mlp_bias: bool = False
  norm: str = "group"  # one of NORMS: the blocks' norm
  norm_bias: bool = False
  norm_eps: float = 1e-6
  downsample_norm: bool = True  # V2: bias-free LayerNorm after the stem conv and before each downsampling conv
  layer_scale_init_values: Optional[float] = None  # LayerScale on both residual branches (v1: 1e-5 or 1e-6)
  res_scale_init_values: Sequence[Optional[float]] = (None, None, 1.0, 1.0)  # ResScale per stage (V2)
  proj_drop_rate: float = 0.0  # dropout in the MLPs
  drop_rate: float = 0.0  # before the classifier
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.dims[-1]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    stages = len(self.depths)
    if stages < 1 or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "one or more stage depths >= 1")
    if len(self.dims) != stages:
      raise config_error(self, "dims", self.dims, f"{stages} stage widths (one per entry of depths)")
    if len(self.token_mixers) != stages or any(m not in TOKEN_MIXERS for m in self.token_mixers):
      raise config_error(self, "token_mixers", self.token_mixers, f"{stages} entries (one per stage) of {TOKEN_MIXERS}")
    if len(self.res_scale_init_values) != stages:
      raise config_error(self, "res_scale_init_values", self.res_scale_init_values, f"{stages} entries (None: none)")
    if self.mlp_act not in MLP_ACTS:
      raise config_error(self, "mlp_act", self.mlp_act, MLP_ACTS)
    if self.norm not in NORMS:
      raise config_error(self, "norm", self.norm, NORMS)
    if self.pool_size < 1 or self.pool_size % 2 != 1:
      raise config_error(self, "pool_size", self.pool_size, "odd sizes >= 1")
    check_rates(self, ("proj_drop_rate", "drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = _conv(self.dims[0], 7, 4, 2, name="stem_conv", **kw)(images.astype(self.dtype))  # [B, H / 4, W / 4, C0]
    if self.downsample_norm:
      x = _norm("layer", False, 1e-6, name="stem_norm", **kw)(x)
    rates = np.split(np.linspace(0.0, self.drop_path_rate, sum(self.depths)), np.cumsum(self.depths)[:-1])
    out = {}
    for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
      block = dict(token_mixer=self.token_mixers[i], pool_size=self.pool_size, mlp_ratio=self.mlp_ratio,
                   mlp_act=self.mlp_act, mlp_bias=self.mlp_bias, norm=self.norm, norm_bias=self.norm_bias,
                   norm_eps=self.norm_eps, layer_scale_init_value=self.layer_scale_init_values,
                   res_scale_init_value=self.res_scale_init_values[i], proj_drop_rate=self.proj_drop_rate)
      x = MetaFormerStage(dim, depth, block, self.downsample_norm, train, name=f"stages_{i}", **kw)(x, rates[i])
      x = nn.with_logical_constraint(x, ("batch", None, None, None))
      out[f"stage{i}"] = x
    # head: global average pool, LayerNorm (eps 1e-6), dropout, fc
    pooled = _norm("layer", True, 1e-6, name="head_norm", **kw)(jnp.mean(x, axis=(1, 2)))
    out["pre_logits"] = pooled
    if self.num_classes == 0:
      out["logits"] = pooled
      return pooled, out
    x = nn.Dropout(self.drop_rate)(pooled, deterministic=not train)
    out["logits"] = dense(self.num_classes, ("embed", "classes"), kernel_init=zeros, name="head_fc", **kw)(x)
    return out["logits"], out


def _register(name, crop_pct, **arch):
  """Registers `name` as a `MetaFormer` with architecture fields `arch` and timm's default eval crop."""
  register_variant(MetaFormer, name, crop_pct=crop_pct, **arch)


_SIZES = {"s12": ((2, 2, 6, 2), (64, 128, 320, 512)), "s24": ((4, 4, 12, 4), (64, 128, 320, 512)),
          "s36": ((6, 6, 18, 6), (64, 128, 320, 512)), "m36": ((6, 6, 18, 6), (96, 192, 384, 768)),
          "m48": ((8, 8, 24, 8), (96, 192, 384, 768))}
# PoolFormer (v1): GELU MLP with biases, GroupNorm with bias (eps 1e-5), LayerScale, no norm in stem / downsampling
_V1 = dict(mlp_act="gelu", mlp_bias=True, norm_bias=True, norm_eps=1e-5, downsample_norm=False,
           res_scale_init_values=(None,) * 4)
for size, (depths, dims) in _SIZES.items():
  _register(f"poolformer_{size}", 0.9 if size[0] == "s" else 0.95, depths=depths, dims=dims,
            layer_scale_init_values=1e-5 if size in ("s12", "s24") else 1e-6, **_V1)
  _register(f"poolformerv2_{size}", 1.0, depths=depths, dims=dims)
