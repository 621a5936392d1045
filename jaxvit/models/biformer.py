"""BiFormer (Zhu et al. 2023, "BiFormer: Vision Transformer with Bi-Level Routing Attention", arXiv:2303.08810);
the official rayleizhu/BiFormer `models/biformer.py` (+ `ops/bra_legacy.py`, `models/_common.py`) @1697bbbe is the
file followed.

A four-stage pyramid on token maps `[B, H, W, C]`, strides 4, 8, 16, 32 (sec. 3.3, Fig. 3): a two-conv stem
(3x3 / 2 conv, BN, GELU, 3x3 / 2 conv, BN) and 3x3 / 2 conv + BN between stages. Each block: a 3x3 depthwise conv
position embedding (`pos_embed`, residual), then x + BRA(LN(x)) (`layers.routing_attention`, stages 1-3: top-k
1, 4, 16 of 7 x 7 regions) or, in the last stage, full attention with LePE, then x + MLP(LN(x)). A BatchNorm
after the last stage, global average pool, linear head. The input sides must make the first three stage maps
multiples of `n_win` (at 224: 56, 28, 14 for 7 regions per side), so 224 px works and e.g. 336 px does too.
Parameter names mirror the official (`downsample_layers_{i}`, `stages_{i}/blocks_{j}` for `stages.{i}.{j}`,
`norm`, `head`; the MLP's `mlp.0` / `mlp.3` are `mlp/fc1` / `mlp/fc2`). BatchNorm statistics live in
`batch_stats`. Returns `(logits, out)`; `out` holds `stage0` ... `stage3`, `pre_logits`, `logits`.
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import batch_norm, linear_head
from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import layer_norm, trunc_normal_02, with_axes
from jaxvit.layers.mlp import Mlp, gelu
from jaxvit.layers.routing_attention import BiLevelRoutingAttention, GlobalAttentionLePE
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error


def conv3x3_s2(features, name, **kw):
  """torch's `Conv2d(C, features, 3, stride 2, padding 1)` with bias."""
  return nn.Conv(features, (3, 3), strides=2, padding=((1, 1), (1, 1)), name=name,
                 kernel_init=with_axes(trunc_normal_02, (None, None, "conv_in", "conv_out")), **kw)


class Block(nn.Module):
  """x + DWConv3x3(x); x + DropPath(Attn(LN(x))); x + DropPath(MLP(LN(x))); the official `Block` (pre-norm, no
  layer scale). `topk > 0`: BRA; -1: plain attention; -2: attention with LePE."""
  num_heads: int
  topk: int
  n_win: int = 7
  qk_dim: int = 0
  mlp_ratio: float = 3.0
  side_dwconv: int = 5
  before_attn_dwconv: int = 3
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.before_attn_dwconv:
      x = x + DepthwiseConv(self.before_attn_dwconv, name="pos_embed", **kw)(x)
    if self.topk > 0:
      attn = BiLevelRoutingAttention(self.num_heads, self.n_win, self.topk, self.qk_dim, self.side_dwconv,
                                     name="attn", **kw)
    else:
      attn = GlobalAttentionLePE(side_dwconv=self.side_dwconv if self.topk == -2 else 0, name="attn", **kw)
    x = x + drop_path(self, attn(layer_norm(1e-6, name="norm1", **kw)(x)), drop_path_rate, train=self.train)
    y = Mlp(int(self.mlp_ratio * x.shape[-1]), name="mlp", **kw)(layer_norm(1e-6, name="norm2", **kw)(x),
                                                                  train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    return nn.with_logical_constraint(x, ("batch", None, None, "embed"))


class BiFormer(nn.Module):
  """BiFormer classifier on NHWC images; the official `BiFormer` (classification defaults of its variants)."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  depths: Sequence[int] = (4, 4, 18, 4)
  embed_dims: Sequence[int] = (64, 128, 256, 512)
  mlp_ratios: Sequence[float] = (3, 3, 3, 3)
  qk_dims: Optional[Sequence[int]] = None  # None: embed_dims
  head_dim: int = 32  # BRA heads = qk_dim / head_dim (the last stage's attention has 8 heads, as the official)
  n_win: int = 7  # regions per side
  topks: Sequence[int] = (1, 4, 16, -2)  # routed regions per stage; -1: attention, -2: attention + LePE
  side_dwconv: int = 5  # LCE / LePE kernel
  before_attn_dwconv: int = 3  # the blocks' depthwise-conv position embedding kernel
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def stage_sizes(self, hw) -> list[tuple[int, int]]:
    """Token-map sizes of the four stages: every stride-2 3x3 conv (padding 1) rounds up."""
    sizes, (h, w) = [], (-(-hw[0] // 2), -(-hw[1] // 2))
    for _ in range(len(self.depths)):
      h, w = -(-h // 2), -(-w // 2)
      sizes.append((h, w))
    return sizes

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if len(self.depths) != 4 or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, "four stage depths >= 1")
    for field in ("embed_dims", "mlp_ratios", "topks") + (("qk_dims",) if self.qk_dims is not None else ()):
      if len(getattr(self, field)) != 4:
        raise config_error(self, field, getattr(self, field), "4 values, one per stage")
    qk_dims = self.qk_dims or self.embed_dims
    for qk, dim, topk in zip(qk_dims, self.embed_dims, self.topks):
      if topk > 0 and (qk % self.head_dim or dim % (qk // self.head_dim or 1)):
        raise config_error(self, "head_dim", self.head_dim, f"divisors of qk_dims={tuple(qk_dims)} whose head "
                           f"counts divide embed_dims={tuple(self.embed_dims)}")
      if topk <= 0 and dim % 8:
        raise config_error(self, "embed_dims", self.embed_dims, "multiples of 8 in the attention stages (8 heads)")
    if any(t == 0 or t < -2 or t > self.n_win ** 2 for t in self.topks):
      raise config_error(self, "topks", self.topks, f"1 ... n_win ** 2 = {self.n_win ** 2}, -1 or -2 per stage")
    if self.side_dwconv % 2 == 0 or self.before_attn_dwconv % 2 == 0:
      raise config_error(self, "side_dwconv", (self.side_dwconv, self.before_attn_dwconv),
                         "odd kernels (side_dwconv, before_attn_dwconv)")
    hw = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    sizes = self.stage_sizes(hw)
    if any((h % self.n_win or w % self.n_win) for (h, w), t in zip(sizes, self.topks) if t > 0):
      raise config_error(self, "img_size", self.img_size, f"sizes whose routed stage maps (now {sizes}) are multiples "
                         f"of n_win={self.n_win}, e.g. multiples of {self.n_win * 16} px with topks={self.topks}")
    check_rates(self, ("drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    qk_dims = self.qk_dims or self.embed_dims
    x = images.astype(self.dtype)
    rates = np.split(np.linspace(0.0, self.drop_path_rate, sum(self.depths)), np.cumsum(self.depths)[:-1])
    out = {}
    for i, depth in enumerate(self.depths):
      dim = self.embed_dims[i]
      if i == 0:  # the stem: 3x3 / 2 conv to dim / 2, BN, GELU, 3x3 / 2 conv, BN
        x = batch_norm(train, name="downsample_layers_0_1", **kw)(conv3x3_s2(dim // 2, "downsample_layers_0_0",
                                                                             **kw)(x))
        x = batch_norm(train, name="downsample_layers_0_4", **kw)(conv3x3_s2(dim, "downsample_layers_0_3",
                                                                             **kw)(gelu(x)))
      else:
        x = batch_norm(train, name=f"downsample_layers_{i}_1", **kw)(conv3x3_s2(dim, f"downsample_layers_{i}_0",
                                                                                **kw)(x))
      for j in range(depth):
        x = Block(qk_dims[i] // self.head_dim, self.topks[i], self.n_win, qk_dims[i], self.mlp_ratios[i],
                  self.side_dwconv, self.before_attn_dwconv, train, name=f"stages_{i}_{j}", **kw)(x, float(rates[i][j]))
      out[f"stage{i}"] = x
    x = batch_norm(train, name="norm", **kw)(x)
    out["pre_logits"] = pooled = x.mean(axis=(1, 2))
    out["logits"] = linear_head(pooled, self.num_classes, self.drop_rate, train, **kw)
    return out["logits"], out


def _register(name, **arch):
  """Registers `name` as a `BiFormer` with fields `arch` (the official timm `_cfg`: crop 0.9)."""
  register_variant(BiFormer, name, crop_pct=0.9, **arch)


_register("biformer_tiny", depths=(2, 2, 8, 2))
_register("biformer_small", depths=(4, 4, 18, 4))
_register("biformer_base", depths=(4, 4, 18, 4), embed_dims=(96, 192, 384, 768))
