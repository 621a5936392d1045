"""CycleMLP (Chen et al. 2022, "CycleMLP: A MLP-like Architecture for Dense Prediction", arXiv:2107.10224); timm
has no CycleMLP, the official ShoufaChen/CycleMLP `cycle_mlp.py` @4e062a03 is the file followed.

A four-stage pyramid on NHWC maps: an overlapping patch embedding (conv 7x7 / 4, padding 2, no norm), stages of
`x + CycleMLP(LN(x))`, `x + MLP(LN(x))` (sec. 3.2: the token mixer sums a `1 x 3` Cycle FC, a `3 x 1` Cycle FC and
a channel FC through split attention, `jaxvit.layers.cycle_fc`), a conv 3x3 / 2 between stages, a final LayerNorm,
global average pooling and a linear head. Parameter names mirror the official modules (`patch_embed`,
`network_{k}_{j}` for block j of `network[k]`, `network_{k}` for the downsamplings, `norm`, `head`). Any input
size works. Returns `(logits, out)`; `out` holds `stage0..3` and `pre_logits`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.conv import linear_head
from jaxvit.layers.cycle_fc import CycleFC
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, layer_norm, trunc_normal_02, with_axes, zeros
from jaxvit.layers.mlp import Mlp
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error


class ConvProj(nn.Module):
  """A conv with bias named `proj`: the official `PatchEmbedOverlapping` (7x7 / 4) and `Downsample` (3x3 / 2)."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, p = self.kernel_size, self.padding
    return nn.Conv(self.features, (k, k), strides=self.stride, padding=((p, p), (p, p)), name="proj",
                   kernel_init=with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")),
                   bias_init=with_axes(zeros, ("conv_out",)), dtype=self.dtype, param_dtype=self.param_dtype)(x)


class CycleMixer(nn.Module):
  """The official `CycleMLP` token mixer (sec. 3.2, fig. 3): `h = CycleFC_(1,3)(x)`, `w = CycleFC_(3,1)(x)`,
  `c = x W_c`; split attention `a = softmax_3(reweight(mean_HW(h + w + c)))` per channel; `proj(h a0 + w a1 + c a2)`."""
  qkv_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, c = x.shape[0], x.shape[-1]
    h = CycleFC(c, (1, 3), name="sfc_h", **kw)(x)
    w = CycleFC(c, (3, 1), name="sfc_w", **kw)(x)
    ch = dense(c, ("embed", "embed"), use_bias=self.qkv_bias, name="mlp_c", **kw)(x)
    a = (h + w + ch).mean(axis=(1, 2))  # [B, C]
    a = Mlp(c // 4, out_dim=3 * c, name="reweight", **kw)(a, train=False).reshape(b, c, 3)  # channel-major
    a = jax.nn.softmax(a, axis=-1)[:, None, None]  # [B, 1, 1, C, 3]
    x = h * a[..., 0] + w * a[..., 1] + ch * a[..., 2]
    return dense(c, ("embed", "embed"), name="proj", **kw)(x)


class CycleBlock(nn.Module):
  """`x + DropPath(CycleMLP(LN(x)))`, then `x + DropPath(MLP(LN(x)))`; the official `CycleBlock` (skip_lam 1)."""
  mlp_ratio: float = 4.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = CycleMixer(name="attn", **kw)(layer_norm(1e-5, name="norm1", **kw)(x))
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), name="mlp", **kw)(layer_norm(1e-5, name="norm2", **kw)(x),
                                                                  train=self.train)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class CycleNet(nn.Module):
  """CycleMLP classifier on NHWC images (any size)."""
  depths: Sequence[int] = (2, 2, 4, 2)
  embed_dims: Sequence[int] = (64, 128, 320, 512)
  mlp_ratios: Sequence[float] = (4, 4, 4, 4)
  num_classes: int = 1000
  img_size: int = 224
  drop_rate: float = 0.0  # dropout before the head (the official CycleNet takes drop_rate but never uses it)
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def validate(self):
    n = len(self.depths)
    for field in ("embed_dims", "mlp_ratios"):
      if len(getattr(self, field)) != n:
        raise config_error(self, field, getattr(self, field), f"one entry per stage ({n}, as depths)")
    if min(self.embed_dims) < 4:
      raise config_error(self, "embed_dims", self.embed_dims, "integers >= 4 (the split attention's hidden width "
                         "is embed_dim // 4)")
    if min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "integers >= 1")
    check_rates(self, ("drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvProj(self.embed_dims[0], 7, 4, 2, name="patch_embed", **kw)(images.astype(self.dtype))
    total, out, index = sum(self.depths), {}, 0
    for i, depth in enumerate(self.depths):
      if i:
        x = ConvProj(self.embed_dims[i], 3, 2, 1, name=f"network_{2 * i - 1}", **kw)(x)
      for j in range(depth):
        rate = self.drop_path_rate * index / max(total - 1, 1)  # the official per-block rates
        x = CycleBlock(self.mlp_ratios[i], train, name=f"network_{2 * i}_{j}", **kw)(x, rate)
        index += 1
      out[f"stage{i}"] = x
    x = layer_norm(1e-5, name="norm", **kw)(x)
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, self.drop_rate, train, **kw)
    return out["logits"], out


def _register(name, depths, mlp_ratios=(4, 4, 4, 4), embed_dims=(64, 128, 320, 512), crop_pct=0.9):
  """The official `CycleMLP_B*`: ImageNet mean / std, crop 0.9 (B1-B3) / 0.875 (B4, B5)."""
  register_variant(CycleNet, name, crop_pct=crop_pct, depths=depths, mlp_ratios=mlp_ratios, embed_dims=embed_dims)


_register("cyclemlp_b1", (2, 2, 4, 2))
_register("cyclemlp_b2", (2, 3, 10, 3))
_register("cyclemlp_b3", (3, 4, 18, 3), (8, 8, 4, 4))
_register("cyclemlp_b4", (3, 8, 27, 3), (8, 8, 4, 4), crop_pct=0.875)
_register("cyclemlp_b5", (3, 4, 24, 3), embed_dims=(96, 192, 384, 768), crop_pct=0.875)
