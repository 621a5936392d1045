"""MaxViT's blocks (Tu et al. 2022, arXiv:2204.01697, sec. 3, Fig. 2): MBConv, then block attention,
then grid attention, each attention followed by an MLP. A helper of `maxxvit.py` (registers nothing);
timm's `maxxvit.py` (`PartitionAttentionCl`, `AttentionCl`, `MaxxVitBlock`, `ParallelMaxxVitBlock`) is
the file followed. Parameter names are timm's.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import Projection, layer_norm
from jaxvit.layers.layer_scale import LayerScale
from jaxvit.layers.mbconv import ACTS, MBConv
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.partition import grid_partition, grid_reverse, window_partition, window_reverse
from jaxvit.layers.rel_pos_bias import RelPosBias, RelPosBiasTf, RelPosMlp

REL_POS = {"bias_tf": RelPosBiasTf, "bias": RelPosBias, "mlp": RelPosMlp}


class PartitionSelfAttention(nn.Module):
  """Multi-head self-attention within each token group `[Bn, N, C]` with a relative position bias
  (eq. 1: softmax(QK^T / sqrt(d) + B) V), timm's `AttentionCl` (`qkv`, `rel_pos`, `proj`).

  `qkv`'s kernel is `[C, heads, 3, d]` with `head_first` (timm's own models) or `[C, 3, heads, d]`
  (the TensorFlow ports), the two orders timm's fused `[3C]` output takes; `C / dim_head` heads. `dim_out`
  (default: the input width) is `proj`'s output width.
  """
  size: Sequence[int]
  dim_head: int = 32
  head_first: bool = False
  rel_pos_type: str = "bias_tf"
  rel_pos_dim: int = 512
  dim_out: Optional[int] = None
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [Bn, N, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = x.shape[-1]
    dim_out, heads = self.dim_out or dim, dim // self.dim_head
    if self.head_first:
      qkv = Projection((heads, 3, self.dim_head), ("embed", "heads", None, "kv"), name="qkv", **kw)(x)
      qkv = qkv.transpose(3, 0, 2, 1, 4)  # [3, Bn, heads, N, d]
    else:
      qkv = Projection((3, heads, self.dim_head), ("embed", None, "heads", "kv"), name="qkv", **kw)(x)
      qkv = qkv.transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    rel_kw = dict(hidden_dim=self.rel_pos_dim) if self.rel_pos_type == "mlp" else {}
    softmax_dtype = jnp.promote_types(self.dtype, jnp.float32)  # at least float32, also under bfloat16
    bias = REL_POS[self.rel_pos_type](heads, tuple(self.size), param_dtype=self.param_dtype, name="rel_pos",
                                      **rel_kw)(softmax_dtype, self.train)  # [heads, N, N]
    logits = jnp.einsum("bhqd,bhkd->bhqk", q * jnp.asarray(self.dim_head ** -0.5, q.dtype), k)
    attn = jax.nn.softmax(logits.astype(softmax_dtype) + bias, axis=-1).astype(self.dtype)
    y = jnp.einsum("bhqk,bhkd->bhqd", attn, v)
    return Projection((dim_out,), ("heads", "kv", "embed"), axis=(1, 3), name="proj", **kw)(y)  # [Bn, N, C_out]


class PartitionAttention(nn.Module):
  """Block (`partition="block"`) or grid attention + MLP, each pre-norm residual (eq. 4-5), timm's
  `PartitionAttentionCl` (`norm1`, `attn`, `ls1`, `norm2`, `mlp`, `ls2`) on NHWC maps. `"parallel"` is
  timm's experimental `ParallelPartitionAttention`: block (`attn_block`) and grid (`attn_grid`) attention
  side by side on the same input, each giving half the channels, then one MLP."""
  partition: str
  size: Sequence[int]
  dim_head: int = 32
  head_first: bool = False
  rel_pos_type: str = "bias_tf"
  rel_pos_dim: int = 512
  mlp_ratio: float = 4.0
  act: str = "gelu_tanh"
  norm_eps: float = 1e-5
  init_values: Optional[float] = None
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, rate: float):  # [B, H, W, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    hw, dim = x.shape[1:3], x.shape[-1]
    y = layer_norm(self.norm_eps, name="norm1", **kw)(x)
    parts = {"block": ("block",), "grid": ("grid",), "parallel": ("block", "grid")}[self.partition]
    outs = []
    for part in parts:
      split, merge = (window_partition, window_reverse) if part == "block" else (grid_partition, grid_reverse)
      attn = PartitionSelfAttention(self.size, self.dim_head, self.head_first, self.rel_pos_type, self.rel_pos_dim,
                                    dim // len(parts), train=self.train,
                                    name=f"attn_{part}" if len(parts) > 1 else "attn", **kw)
      outs.append(merge(attn(split(y, self.size)), self.size, hw))  # via [B * n, P * P, C] groups
    y = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
    if self.init_values:
      y = LayerScale(self.init_values, self.param_dtype, name="ls1")(y)
    x = x + drop_path(self, y, rate, train=self.train)
    y = Mlp(int(dim * self.mlp_ratio), ACTS[self.act], name="mlp", **kw)(
        layer_norm(self.norm_eps, name="norm2", **kw)(x), train=self.train)
    if self.init_values:
      y = LayerScale(self.init_values, self.param_dtype, name="ls2")(y)
    return x + drop_path(self, y, rate, train=self.train)


class MaxxVitBlock(nn.Module):
  """One MaxViT block: `conv` (MBConv, carries the stride), `attn_block` (local), `attn_grid` (global).
  `conv_kw` / `attn_kw` are `MBConv` / `PartitionAttention` fields."""
  out_chs: int
  stride: int
  conv_kw: dict
  attn_kw: dict
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, rate: float):
    kw = dict(train=self.train, dtype=self.dtype, param_dtype=self.param_dtype)
    x = MBConv(self.out_chs, self.stride, name="conv", **self.conv_kw, **kw)(
        x, lambda y: drop_path(self, y, rate, train=self.train))
    x = PartitionAttention("block", name="attn_block", **self.attn_kw, **kw)(x, rate)
    return PartitionAttention("grid", name="attn_grid", **self.attn_kw, **kw)(x, rate)


class ParallelMaxxVitBlock(nn.Module):
  """timm's experimental `ParallelMaxxVitBlock`: two MBConvs (`conv_0` carries the stride, `conv_1`), then
  block and grid attention in parallel (`attn`, `PartitionAttention("parallel")`)."""
  out_chs: int
  stride: int
  conv_kw: dict
  attn_kw: dict
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, rate: float):
    kw = dict(train=self.train, dtype=self.dtype, param_dtype=self.param_dtype)
    for i, stride in enumerate((self.stride, 1)):
      x = MBConv(self.out_chs, stride, name=f"conv_{i}", **self.conv_kw, **kw)(
          x, lambda y: drop_path(self, y, rate, train=self.train))
    return PartitionAttention("parallel", name="attn", **self.attn_kw, **kw)(x, rate)


BLOCKS = {"M": MaxxVitBlock, "PM": ParallelMaxxVitBlock}
