"""TNT, Transformer in Transformer (Han et al. 2021, arXiv:2103.00112); timm's `tnt.py` is the file followed.

Every 16x16 patch ("visual sentence") is also a 4x4 grid of "visual words" (pixel embeddings, `inner_dim`
wide). Each block first runs an inner transformer over the words of every patch (eq. 3-4), then adds the
flattened, projected words to their patch embedding (eq. 5) and runs an outer transformer over the patches
(eq. 6-7). The pixel embedding is a 7x7 stride-4 convolution, per patch (`legacy=False`, zero-padded at
patch borders) or over the whole image and then cut into patches (`legacy=True`, the first release's
weights, with a biased projection and no norm after it). Parameter names mirror timm's.

Returns `(logits, out)`; `out` holds `block{i}` (patch tokens, class token first), `encoded`, `pre_logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import linear_head
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import Projection, dense, layer_norm, trunc_normal_02, with_axes, zeros
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.outlook_attention import unfold
from jaxvit.registry import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD, register_variant
from jaxvit.utils import check_rates, config_error

POOLS = ("token", "avg")
NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which TNT uses


class Attention(nn.Module):
  """TNT's multi-head self-attention, timm's `tnt.Attention`: `qk` one fused projection (kernel
  `[embed, 2, heads, head_dim]`), `v` a separate one, then `proj`; softmax(q k^T / sqrt(d)) v."""
  num_heads: int
  qkv_bias: bool = False
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    dim = x.shape[-1]
    head_dim = dim // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    qk = Projection((2, self.num_heads, head_dim), ("embed", None, "heads", "kv"), use_bias=self.qkv_bias,
                    name="qk", **kw)(x).transpose(2, 0, 3, 1, 4)  # [2, B, H, N, d]
    v = Projection((self.num_heads, head_dim), ("embed", "heads", "kv"), use_bias=self.qkv_bias, name="v",
                   **kw)(x).transpose(0, 2, 1, 3)  # [B, H, N, d]
    logits = jnp.einsum("bhqd,bhkd->bhqk", qk[0] * jnp.asarray(head_dim ** -0.5, qk.dtype), qk[1])
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train)
    y = jnp.einsum("bhqk,bhkd->bhqd", attn, v)
    y = Projection((dim,), ("heads", "kv", "embed"), axis=(1, 3), name="proj", **kw)(y)  # [B, N, D]
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)


class UnfoldConv(nn.Module):
  """A convolution with bias as `unfold` + one matmul (kernel HWIO `[k, k, C_in, C_out]`, torch's padding
  `padding`): `[B, H, W, C_in] -> [B, h, w, C_out]`. Exactly a conv's multiply-adds; on CPU as fast as XLA's
  convolution for TNT's three input channels (faster on the whole image, legacy), and one kind of op."""
  features: int
  kernel_size: int = 7
  stride: int = 4
  padding: int = 3
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", with_axes(jax.nn.initializers.lecun_normal(in_axis=(0, 1, 2)),
                                            (None, None, "conv_in", "conv_out")),
                        (k, k, c, self.features), self.param_dtype)
    bias = self.param("bias", with_axes(zeros, ("conv_out",)), (self.features,), self.param_dtype)
    cols = unfold(x.astype(self.dtype), k, self.stride, self.padding)  # [B, h, w, k * k, C_in]
    cols = cols.reshape(cols.shape[:3] + (k * k * c,))
    return jnp.dot(cols, kernel.reshape(k * k * c, -1).astype(self.dtype)) + bias.astype(self.dtype)


class PixelEmbed(nn.Module):
  """timm's `PixelEmbed`: `[B, H, W, C] -> [B * N, words, inner_dim]`, the visual words of every patch
  (row-major within the patch) plus the shared word position embedding `pixel_pos`."""
  inner_dim: int
  patch_size: int = 16
  stride: int = 4
  legacy: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, pixel_pos):
    b, hh, ww, c = x.shape
    p, gh, gw = self.patch_size, hh // self.patch_size, ww // self.patch_size
    proj = UnfoldConv(self.inner_dim, 7, self.stride, 3, name="proj", dtype=self.dtype, param_dtype=self.param_dtype)
    if self.legacy:  # conv over the image, then cut its map into patches
      y = proj(x)
      q = y.shape[1] // gh
      y = y.reshape(b, gh, q, gw, q, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b * gh * gw, q, q, -1)
    else:  # cut into patches, then conv each (zero padding at the patch border)
      y = proj(x.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b * gh * gw, p, p, c))
    y = y + pixel_pos.astype(y.dtype)
    return y.reshape(y.shape[0], -1, self.inner_dim)


class Block(nn.Module):
  """TNT block: inner transformer on the words, words -> patch (`norm1_proj`, `proj`, `norm2_proj`), outer
  transformer on the patches; one stochastic-depth rate for all four residual branches, as timm."""
  num_heads_inner: int
  num_heads_outer: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = False
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  legacy: bool = False
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels, patches, drop_path_rate: float = 0.0):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: layer_norm(NORM_EPS, name=name, **kw)
    drop = lambda y: drop_path(self, y, drop_path_rate, train=self.train)
    attn = lambda heads, name: Attention(heads, self.qkv_bias, self.attn_drop_rate, self.proj_drop_rate, name=name,
                                         **kw)
    inner, dim = pixels.shape[-1], patches.shape[-1]
    # inner transformer: [B * N, words, c] (eq. 3-4)
    pixels = pixels + drop(attn(self.num_heads_inner, "attn_in")(norm("norm_in")(pixels), train=self.train))
    pixels = pixels + drop(Mlp(4 * inner, drop_rate=self.proj_drop_rate, name="mlp_in", **kw)(
        norm("norm_mlp_in")(pixels), train=self.train))
    # words -> their patch (eq. 5): [B * N, words, c] -> [B, N, words * c] -> [B, N, D]
    b, n = patches.shape[0], patches.shape[1] - 1
    if self.legacy:
      words = norm("norm1_proj")(pixels).reshape(b, n, -1)
      words = dense(dim, ("mlp", "embed"), name="proj", **kw)(words)
    else:
      words = norm("norm1_proj")(pixels.reshape(b, n, -1))
      words = norm("norm2_proj")(dense(dim, ("mlp", "embed"), use_bias=False, name="proj", **kw)(words))
    patches = jnp.concatenate([patches[:, :1], patches[:, 1:] + words.astype(patches.dtype)], axis=1)
    # outer transformer: [B, 1 + N, D] (eq. 6-7)
    patches = patches + drop(attn(self.num_heads_outer, "attn_out")(norm("norm_out")(patches), train=self.train))
    patches = patches + drop(Mlp(int(dim * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(
        norm("norm_mlp")(patches), train=self.train))
    return pixels, nn.with_logical_constraint(patches, ("batch", "seq", "embed"))


class TNT(nn.Module):
  """TNT classifier on NHWC images; timm's `TNT`."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  patch_size: int = 16
  embed_dim: int = 768  # outer (patch) width
  inner_dim: int = 48  # inner (word) width
  depth: int = 12
  num_heads_inner: int = 4
  num_heads_outer: int = 12
  mlp_ratio: float = 4.0  # outer MLP; the inner one is 4x
  qkv_bias: bool = False
  first_stride: int = 4  # the pixel embedding's stride: words per patch = ceil(patch_size / first_stride)^2
  legacy: bool = False
  global_pool: str = "token"  # one of POOLS
  drop_rate: float = 0.0  # before the head
  pos_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dim

  @property
  def grid(self) -> tuple[int, int]:
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    return h // self.patch_size, w // self.patch_size

  @property
  def words(self) -> int:
    """Visual words per patch side."""
    return -(-self.patch_size // self.first_stride)

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if self.global_pool not in POOLS:
      raise config_error(self, "global_pool", self.global_pool, POOLS)
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    if h % self.patch_size or w % self.patch_size:
      raise config_error(self, "img_size", self.img_size, f"multiples of patch_size={self.patch_size}")
    if self.legacy and self.patch_size % self.first_stride:
      raise config_error(self, "patch_size", self.patch_size, f"multiples of first_stride={self.first_stride} "
                         "with legacy=True")
    if self.embed_dim % self.num_heads_outer:
      raise config_error(self, "num_heads_outer", self.num_heads_outer, f"divisors of embed_dim={self.embed_dim}")
    if self.inner_dim % self.num_heads_inner:
      raise config_error(self, "num_heads_inner", self.num_heads_inner, f"divisors of inner_dim={self.inner_dim}")
    check_rates(self, ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    (gh, gw), p = self.grid, self.patch_size
    if tuple(images.shape[1:3]) != (gh * p, gw * p):
      raise ValueError(f"input images are {images.shape[1]}x{images.shape[2]} but the model was built with "
                       f"img_size={self.img_size}; create it with img_size={images.shape[1]}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, q, dim = images.shape[0], self.words, self.embed_dim
    pixel_pos = self.param("pixel_pos", with_axes(trunc_normal_02, (None, None, None, "mlp")),
                           (1, q, q, self.inner_dim), self.param_dtype)
    pixels = PixelEmbed(self.inner_dim, p, self.first_stride, self.legacy, name="pixel_embed", **kw)(
        images.astype(self.dtype), pixel_pos)  # [B * N, q * q, c]
    patches = layer_norm(NORM_EPS, name="norm1_proj", **kw)(pixels.reshape(b, gh * gw, -1))
    patches = dense(dim, ("mlp", "embed"), name="proj", **kw)(patches)
    patches = layer_norm(NORM_EPS, name="norm2_proj", **kw)(patches)
    cls = self.param("cls_token", with_axes(trunc_normal_02, (None, None, "embed")), (1, 1, dim), self.param_dtype)
    pos = self.param("patch_pos", with_axes(trunc_normal_02, (None, "seq", "embed")), (1, 1 + gh * gw, dim),
                     self.param_dtype)
    patches = jnp.concatenate([jnp.broadcast_to(cls.astype(patches.dtype), (b, 1, dim)), patches], axis=1)
    patches = nn.Dropout(self.pos_drop_rate)(patches + pos.astype(patches.dtype), deterministic=not train)

    out = {}
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    for i in range(self.depth):
      pixels, patches = Block(self.num_heads_inner, self.num_heads_outer, self.mlp_ratio, self.qkv_bias,
                              self.proj_drop_rate, self.attn_drop_rate, self.legacy, train, name=f"blocks_{i}",
                              **kw)(pixels, patches, float(rates[i]))
      out[f"block{i}"] = patches
    x = layer_norm(NORM_EPS, name="norm", **kw)(patches)
    out["encoded"] = x
    pooled = x[:, 0] if self.global_pool == "token" else x[:, 1:].mean(axis=1)
    out["pre_logits"] = pooled
    if self.num_classes == 0:
      return pooled, out
    out["logits"] = linear_head(pooled, self.num_classes, self.drop_rate, train, **kw)
    return out["logits"], out


def _register(name, **arch):
  """Registers `name` as a `TNT` with architecture fields `arch` (Inception mean / std, crop 0.9, as timm)."""
  register_variant(TNT, name, mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD, crop_pct=0.9, **arch)


_S = dict(embed_dim=384, inner_dim=24, depth=12, num_heads_outer=6)
_register("tnt_s_patch16_224", **_S)
_register("tnt_s_legacy_patch16_224", legacy=True, **_S)
_register("tnt_b_patch16_224", embed_dim=640, inner_dim=40, depth=12, num_heads_outer=10)
