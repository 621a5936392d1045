"""CvT, Convolutional vision Transformer (Wu et al. 2021, arXiv:2103.15808).

Three stages (sec. 3, fig. 2); each starts with a convolutional token embedding (`jaxvit.layers.conv_embed`,
sec. 3.1: overlapping strided conv + LayerNorm) and stacks pre-norm transformer blocks whose attention takes q / k /
v from depthwise conv + BatchNorm projections, k / v at stride 2 (`jaxvit.layers.conv_attention`, sec. 3.2). No
position embedding. A class token joins only in the last stage; its final LayerNorm feeds the head. The MLP uses
QuickGELU (x sigmoid(1.702 x)) and LayerNorm eps 1e-5, as the official `get_cls_model`.

Followed (timm has no CvT): `microsoft/CvT` `lib/models/cls_cvt.py` and `experiments/imagenet/cvt/*.yaml` at commit
f851e681966390779b71380d2600b52360ff4fe1; parameter names mirror its modules (`stage{i}`, `blocks_{j}`, `attn`,
`conv_proj_q` ...). BatchNorm keeps `batch_stats`.

Returns `(logits, out)`; `out` holds `stage{i}` maps `[B, H, W, C]`, `pre_logits`, `logits`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv_attention import ConvAttention
from jaxvit.layers.conv_embed import ConvEmbed
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, layer_norm, trunc_normal_02, with_axes
from jaxvit.layers.mlp import Mlp
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

NORM_EPS = 1e-5


def quick_gelu(x):
  """The official `QuickGELU`: x sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(jnp.asarray(1.702, x.dtype) * x)


class CvTBlock(nn.Module):
  """x + attn(norm1(x)); x + mlp(norm2(x)) on tokens of an `H x W` map (official `Block`)."""
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  with_cls_token: bool = False
  stride_kv: int = 2
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, grid):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = x.shape[-1]
    y = layer_norm(NORM_EPS, name="norm1", **kw)(x)
    y = ConvAttention(d, self.num_heads, self.qkv_bias, stride_kv=self.stride_kv, with_cls_token=self.with_cls_token,
                      attn_drop_rate=self.attn_drop_rate, proj_drop_rate=self.drop_rate, train=self.train, name="attn",
                      **kw)(y, grid)
    x = x + drop_path(self, y, self.drop_path_rate, train=self.train)
    y = layer_norm(NORM_EPS, name="norm2", **kw)(x)
    y = Mlp(int(d * self.mlp_ratio), act=quick_gelu, drop_rate=self.drop_rate, name="mlp", **kw)(y, train=self.train)
    return x + drop_path(self, y, self.drop_path_rate, train=self.train)


class CvT(nn.Module):
  """CvT classifier on NHWC images, the official `ConvolutionalVisionTransformer`."""
  num_classes: int = 1000
  img_size: int = 224  # any size works (no position embedding); kept for the registry / benchmarks
  in_chans: int = 3
  embed_dims: Sequence[int] = (64, 192, 384)
  depths: Sequence[int] = (1, 2, 10)
  num_heads: Sequence[int] = (1, 3, 6)
  patch_sizes: Sequence[int] = (7, 3, 3)
  patch_strides: Sequence[int] = (4, 2, 2)
  patch_paddings: Sequence[int] = (2, 1, 1)
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  stride_kv: int = 2
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.1  # the last stage's (the yaml's DROP_PATH_RATE [0, 0, r])
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    n = len(self.embed_dims)
    if n < 1:
      raise config_error(self, "embed_dims", self.embed_dims, "a non-empty sequence")
    for field in ("depths", "num_heads", "patch_sizes", "patch_strides", "patch_paddings"):
      if len(getattr(self, field)) != n:
        raise config_error(self, field, getattr(self, field), f"{n} values, one per stage of embed_dims")
    if any(d < 1 for d in self.depths):
      raise config_error(self, "depths", self.depths, "positive block counts")
    for d, h in zip(self.embed_dims, self.num_heads):
      if h < 1 or d % h:
        raise config_error(self, "num_heads", self.num_heads, "positive divisors of the stages' embed_dims")
    if self.stride_kv < 1:
      raise config_error(self, "stride_kv", self.stride_kv, "positive integers")
    check_rates(self, ("drop_rate", "attn_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    self.validate()
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out = {}
    x = images.astype(self.dtype)
    last = len(self.embed_dims) - 1
    for s, (dim, depth, heads) in enumerate(zip(self.embed_dims, self.depths, self.num_heads)):
      x = ConvEmbed(dim, self.patch_sizes[s], self.patch_strides[s], self.patch_paddings[s], NORM_EPS,
                    name=f"stage{s}_patch_embed", **kw)(x)
      b, h, w, _ = x.shape
      if h < 1 or w < 1:
        raise ValueError(f"input images of {images.shape[1]}x{images.shape[2]} shrink to nothing in stage {s}")
      tokens = x.reshape(b, h * w, dim)
      cls_token = s == last
      if cls_token:
        cls = self.param(f"stage{s}_cls_token", with_axes(trunc_normal_02, (None, None, "embed")), (1, 1, dim),
                         self.param_dtype)
        tokens = jnp.concatenate([jnp.broadcast_to(cls.astype(tokens.dtype), (b, 1, dim)), tokens], axis=1)
      tokens = nn.Dropout(self.drop_rate)(tokens, deterministic=not train)
      rates = np.linspace(0, self.drop_path_rate if s == last else 0.0, depth)
      for j in range(depth):
        tokens = CvTBlock(heads, self.mlp_ratio, self.qkv_bias, cls_token, self.stride_kv, self.drop_rate,
                          self.attn_drop_rate, float(rates[j]), train, name=f"stage{s}_blocks_{j}", **kw)(tokens,
                                                                                                          (h, w))
      if cls_token:
        cls_out, tokens = tokens[:, 0], tokens[:, 1:]
      x = out[f"stage{s}"] = tokens.reshape(b, h, w, dim)
    pooled = out["pre_logits"] = layer_norm(NORM_EPS, name="norm", **kw)(cls_out)
    if self.num_classes == 0:
      out["logits"] = pooled
      return pooled, out
    logits = out["logits"] = dense(self.num_classes, ("embed", "classes"), name="head", **kw)(pooled)
    return logits, out


def _register(name, img_size, **arch):
  """Registers `name` as a `CvT` (official test crop: resize 256 -> center 224, i.e. 0.875; 384 models crop 1.0)."""
  register_variant(CvT, name, crop_pct=0.875 if img_size == 224 else 1.0, img_size=img_size, **arch)


_register("cvt_13_224", 224)
_register("cvt_13_384", 384)
_register("cvt_21_224", 224, depths=(1, 4, 16))
_register("cvt_21_384", 384, depths=(1, 4, 16))
_register("cvt_w24_384", 384, embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16),
          drop_path_rate=0.3)
