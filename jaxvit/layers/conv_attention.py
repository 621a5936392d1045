"""CvT's convolutional projection attention (Wu et al. 2021, arXiv:2103.15808, sec. 3.2, eq. 2).

Tokens are reshaped to their 2D map; q, k and v each come from a depthwise convolution + BatchNorm of that map
(the paper's "convolutional projection", official method `dw_bn`) followed by a linear projection. The k / v
convolutions use stride 2 ("squeezed convolutional projection"), cutting the keys 4x. A class token, when present,
skips the convolutions and is prepended to q, k and v. The official `Attention` scales logits by
`dim^-1/2` (the full width, not the head width), kept here. BatchNorm keeps running statistics in `batch_stats`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.conv import batch_norm, conv2d
from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.init import dense


class ConvProjection(nn.Module):
  """Depthwise k x k conv (no bias, padding k // 2, `stride`) -> BatchNorm -> tokens; official `conv`, `bn`."""
  kernel_size: int = 3
  stride: int = 1
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x.shape[-1]
    if self.stride == 1:
      x = DepthwiseConv(self.kernel_size, use_bias=False, name="conv", **kw)(x)
    else:  # few outputs: the grouped conv is cheap enough and counts the strided MACs exactly
      x = conv2d(c, self.kernel_size, self.stride, groups=c, name="conv", **kw)(x)
    x = batch_norm(self.train, name="bn", **kw)(x)
    return x.reshape(x.shape[0], -1, c)


class ConvAttention(nn.Module):
  """Multi-head attention over `[B, (1 +) H W, C]` tokens of an `H x W` map with convolutional q / k / v."""
  dim: int
  num_heads: int
  qkv_bias: bool = True
  kernel_size: int = 3
  stride_q: int = 1
  stride_kv: int = 2
  with_cls_token: bool = False
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, grid):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, _, c = x.shape
    h, w = grid
    if self.with_cls_token:
      cls, x = x[:, :1], x[:, 1:]
    fmap = x.reshape(b, h, w, c)
    heads, head_dim = self.num_heads, self.dim // self.num_heads

    def project(tag, stride):
      t = ConvProjection(self.kernel_size, stride, self.train, name=f"conv_proj_{tag}", **kw)(fmap)
      if self.with_cls_token:
        t = jnp.concatenate([cls.astype(t.dtype), t], axis=1)
      t = dense(self.dim, ("embed", "kv"), use_bias=self.qkv_bias, name=f"proj_{tag}", **kw)(t)
      return t.reshape(b, -1, heads, head_dim)

    q, k, v = project("q", self.stride_q), project("k", self.stride_kv), project("v", self.stride_kv)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.asarray(self.dim ** -0.5, q.dtype)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not self.train)
    y = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, -1, self.dim)
    y = dense(self.dim, ("kv", "embed"), name="proj", **kw)(y)
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not self.train)
