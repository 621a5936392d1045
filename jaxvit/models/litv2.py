"""LITv2 (Pan et al. 2022, "Fast Vision Transformers with HiLo Attention", arXiv:2205.13213); the official
ziplab/LITv2 `classification/models/litv2.py` (+ `blocks.py`, `layers.py`, `patch_embed.py`, `attentions.py` and
`configs/litv2-*.yaml`) @7501c866 is the file followed.

A Swin-like four-stage pyramid (stride-4 patch embedding + LayerNorm, strides 4, 8, 16, 32; sec. 4.2): the first two
stages hold MLP-only blocks (x + ConvFFN(LN(x)): fc1, 3x3 depthwise conv, GELU, fc2), the last two pre-norm blocks
of HiLo attention (`layers.hilo_attention`; windows 2 in stage 3, 1 = plain attention in stage 4, alpha 0.9) and
ConvFFN. Between stages, deformable token merging (DTM, from LIT arXiv:2105.14217): a 2x2 / 2 deformable conv to
twice the width (`layers.deform_conv`), BatchNorm, GELU. Final LayerNorm, average pool, linear head. The official
code takes square inputs only; here any input whose sides are multiples of 32 works (DTM halves even maps and stage
3's HiLo windows need even maps). Parameter names mirror the official (`patch_embed/proj`, `patch_embed/norm`,
`layers_{i}/blocks_{j}`, `layers_{i}/downsample/dconv`, `.../norm_layer`, `norm`, `head`); BatchNorm statistics
live in `batch_stats`. Returns `(logits, out)`; `out` holds `stage0` ... `stage3` (before DTM), `pre_logits`,
`logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import batch_norm, linear_head
from jaxvit.layers.conv_mlp import MlpWithDepthwiseConv
from jaxvit.layers.deform_conv import DeformConv2d
from jaxvit.layers.drop import drop_path
from jaxvit.layers.hilo_attention import HiLo
from jaxvit.layers.init import layer_norm
from jaxvit.layers.mlp import gelu
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, check_stages, config_error


class Block(nn.Module):
  """[x + DropPath(HiLo(LN(x)))] then x + DropPath(ConvFFN(LN(x))) on `[B, H, W, C]`; the official `Block`, or
  with `local_ws=0` its MLP-only `ConvFFNBlock` (`norm2`, `mlp` only). LayerNorm eps 1e-5 (torch's default)."""
  num_heads: int
  local_ws: int
  alpha: float = 0.9
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.local_ws:
      y = HiLo(self.num_heads, self.local_ws, self.alpha, self.qkv_bias, name="attn", **kw)(
          layer_norm(1e-5, name="norm1", **kw)(x))
      x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = MlpWithDepthwiseConv(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.drop_rate, name="mlp", **kw)(
        layer_norm(1e-5, name="norm2", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", None, None, "embed"))


class DTM(nn.Module):
  """Deformable token merging: 2x2 / 2 deformable conv (`dconv`) to `features`, BatchNorm (`norm_layer`), GELU."""
  features: int
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = DeformConv2d(self.features, 2, 2, 0, name="dconv", **kw)(x)
    return gelu(batch_norm(self.train, name="norm_layer", **kw)(x))


class Stem(nn.Module):
  """Patch embedding (`proj`, a stride-`patch_size` conv) + LayerNorm (`norm`, eps 1e-5): the official `PatchEmbed`."""
  embed_dim: int
  patch_size: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w = images.shape[:3]
    x = layer_norm(1e-5, name="norm", **kw)(PatchEmbed(self.embed_dim, self.patch_size, name="proj", **kw)(images))
    return x.reshape(b, h // self.patch_size, w // self.patch_size, self.embed_dim)


class Layer(nn.Module):
  """One stage (the official `LITLayer`): `depth` blocks, then DTM (`downsample`) to twice the width unless last."""
  depth: int
  downsample: bool
  block: dict
  drop_path_rates: tuple = ()
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.depth):
      x = Block(train=self.train, name=f"blocks_{i}", **self.block, **kw)(x, self.drop_path_rates[i])
    features = x
    if self.downsample:
      x = DTM(2 * x.shape[-1], self.train, name="downsample", **kw)(x)
    return x, features


class LITv2(nn.Module):
  """LITv2 classifier on NHWC images; the official `LITv2` with its classification config (`config.py` defaults +
  `configs/litv2-*.yaml`)."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  patch_size: int = 4
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  local_ws: Sequence[int] = (0, 0, 2, 1)  # HiLo window per stage; 0: MLP-only blocks (the official has_msa=0)
  alpha: float = 0.9  # share of Lo-Fi heads
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_rate: float = 0.0  # inside the MLPs (the official builds a `pos_drop` but never calls it)
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dim * 2 ** (len(self.depths) - 1)

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    n = check_stages(self, ("num_heads", "local_ws"))
    for i, heads in enumerate(self.num_heads):
      if (self.embed_dim * 2 ** i) % heads:
        raise config_error(self, "num_heads", self.num_heads, "divisors of the stage widths embed_dim * 2^i")
    if min(self.local_ws) < 0:
      raise config_error(self, "local_ws", self.local_ws, "window sizes >= 1, or 0 for MLP-only stages")
    if not 0.0 <= self.alpha <= 1.0:
      raise config_error(self, "alpha", self.alpha, "[0, 1]")
    hw = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    unit = self.patch_size * 2 ** (n - 1)
    for i, ws in enumerate(self.local_ws):
      unit = int(np.lcm(unit, self.patch_size * 2 ** i * max(ws, 1)))
    if hw[0] % unit or hw[1] % unit:
      raise config_error(self, "img_size", self.img_size, f"multiples of {unit} (patch_size x 2^(stages - 1) for "
                         f"the token merging, times the HiLo windows local_ws={self.local_ws})")
    check_rates(self, ("drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = Stem(self.embed_dim, self.patch_size, name="patch_embed", **kw)(images.astype(self.dtype))
    n = len(self.depths)
    rates = np.split(np.linspace(0.0, self.drop_path_rate, sum(self.depths)), np.cumsum(self.depths)[:-1])
    out = {}
    for i, depth in enumerate(self.depths):
      block = dict(num_heads=self.num_heads[i], local_ws=self.local_ws[i], alpha=self.alpha, mlp_ratio=self.mlp_ratio,
                   qkv_bias=self.qkv_bias, drop_rate=self.drop_rate)
      x, out[f"stage{i}"] = Layer(depth, i < n - 1, block, tuple(float(r) for r in rates[i]), train,
                                  name=f"layers_{i}", **kw)(x)
    x = layer_norm(1e-5, name="norm", **kw)(x)
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, 0.0, train, **kw)
    return out["logits"], out


def _register(name, **arch):
  """Registers `name` as a `LITv2` with fields `arch` (the official eval: Swin's crop 0.875)."""
  register_variant(LITv2, name, crop_pct=0.875, **arch)


_register("litv2_small", depths=(2, 2, 6, 2))
_register("litv2_medium", depths=(2, 2, 18, 2))
_register("litv2_base", depths=(2, 2, 18, 2), embed_dim=128, num_heads=(4, 8, 16, 32))
