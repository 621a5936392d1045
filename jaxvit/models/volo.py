"""VOLO, Vision Outlooker (Yuan et al. 2021, arXiv:2106.13112); timm's `volo.py` is the file followed.

A conv stem (three convs + BN + ReLU, then a patch projection) gives an `img / patch_size` map; stage 0 is
Outlookers (outlook attention, `jaxvit.layers.outlook_attention`, + MLP) at that resolution; a 2x2 patch
merge halves it, a learned position embedding is added, and the other stages are plain transformer
blocks; two class-attention blocks (`jaxvit.layers.class_attention`) add and update a class token, and
the classifier adds token labelling's auxiliary head (Jiang et al. 2021, arXiv:2104.10858):
logits = head(x_cls) + 0.5 * max_n aux_head(x_n) over the patch tokens, in training and at eval (timm's
`forward`). Parameter names mirror timm's (`network_0_0`, `post_network_0`, `aux_head`, ...).

Returns `(logits, out)`; `out` holds `stage0` ... (`[B, H, W, C]`: the Outlooker map, then the token
stages' maps), `encoded` (normalised tokens, class token first), `pre_logits`, and with a classifier
`logits_cls` (the class-token head) and `logits_aux` `[B, N, num_classes]` (the per-token auxiliary
head, token labelling's dense predictions), and `logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.attention import Attention
from jaxvit.layers.class_attention import ClassBlock
from jaxvit.layers.conv import batch_norm, conv2d
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, layer_norm, trunc_normal_02, with_axes, zeros
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.outlook_attention import OutlookAttention
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

POOLS = ("token", "avg")
NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which VOLO uses


class Outlooker(nn.Module):
  """x + DropPath(OutlookAttention(LN(x))), then x + DropPath(MLP(LN(x))) on an NHWC map; timm's `Outlooker`."""
  num_heads: int
  kernel_size: int = 3
  stride: int = 2
  mlp_ratio: float = 3.0
  qkv_bias: bool = False
  attn_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float = 0.0):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = OutlookAttention(self.num_heads, self.kernel_size, self.stride, self.qkv_bias, self.attn_drop_rate,
                         name="attn", **kw)(layer_norm(NORM_EPS, name="norm1", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), name="mlp", **kw)(layer_norm(NORM_EPS, name="norm2", **kw)(x),
                                                                  train=self.train)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class Transformer(nn.Module):
  """Pre-norm MHSA + MLP block on `[B, N, C]` tokens; timm's VOLO `Transformer` (no projection dropout)."""
  num_heads: int
  mlp_ratio: float = 3.0
  qkv_bias: bool = False
  attn_drop_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path_rate: float = 0.0):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y, _ = Attention(self.num_heads, self.qkv_bias, self.attn_drop_rate, name="attn", **kw)(
        layer_norm(NORM_EPS, name="norm1", **kw)(x), train=self.train)
    x = x + drop_path(self, y, drop_path_rate, train=self.train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), name="mlp", **kw)(layer_norm(NORM_EPS, name="norm2", **kw)(x),
                                                                  train=self.train)
    return x + drop_path(self, y, drop_path_rate, train=self.train)


class StemPatchEmbed(nn.Module):
  """timm's VOLO `PatchEmbed`: 7x7 stride-2 conv, two 3x3 convs (each + BN + ReLU), then a non-overlapping
  `patch_size / 2` projection (`proj`, a matmul): `[B, H, W, 3] -> [B, H / p, W / p, embed_dim]`."""
  embed_dim: int
  patch_size: int = 8
  hidden_dim: int = 64
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i, (kernel, stride) in enumerate(((7, 2), (3, 1), (3, 1)), 1):
      x = conv2d(self.hidden_dim, kernel, stride, name=f"conv{i}", **kw)(x)
      x = nn.relu(batch_norm(self.train, name=f"bn{i}", **kw)(x))
    return _patchify(PatchEmbed(self.embed_dim, self.patch_size // 2, name="proj", **kw), x)


class Downsample(nn.Module):
  """timm's VOLO `Downsample`: a 2x2 stride-2 conv (`proj`, a matmul) between stage 0 and the token stages."""
  embed_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return _patchify(PatchEmbed(self.embed_dim, 2, name="proj", dtype=self.dtype, param_dtype=self.param_dtype), x)


def _patchify(embed, x):
  """`PatchEmbed`'s tokens back on their grid: `[B, H, W, C] -> [B, H / p, W / p, D]`."""
  b, h, w, _ = x.shape
  return embed(x).reshape(b, h // embed.patch_size, w // embed.patch_size, embed.embed_dim)


class VOLO(nn.Module):
  """VOLO classifier on NHWC images; timm's `VOLO` with its defaults (stage 0 Outlookers + downsample,
  then transformer stages, class attention, token labelling's auxiliary head)."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  patch_size: int = 8  # the stem's total stride (4, 8 or 16); the token stages run at 2 x patch_size
  stem_hidden_dim: int = 64
  layers: Sequence[int] = (4, 4, 8, 2)  # blocks per stage; stage 0 is Outlookers
  embed_dims: Sequence[int] = (192, 384, 384, 384)
  num_heads: Sequence[int] = (6, 12, 12, 12)
  mlp_ratio: float = 3.0
  qkv_bias: bool = False
  kernel_size: int = 3  # outlook attention window K (odd; padding K // 2)
  outlook_stride: int = 2  # outlook attention's grid stride (its pooling)
  post_layers: int = 2  # class-attention blocks (0: no class token)
  use_aux_head: bool = True  # token labelling's per-token head, 0.5 x its max added to the logits
  global_pool: str = "token"  # one of POOLS ("avg" averages every token, the class token too, as timm)
  drop_rate: float = 0.0  # before the heads
  pos_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0  # token stages only: timm (and the official code) leave the Outlookers at 0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  @property
  def grid(self) -> tuple[int, int]:
    """The token stages' grid: img_size / (2 x patch_size)."""
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    return h // (2 * self.patch_size), w // (2 * self.patch_size)

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if self.patch_size not in (4, 8, 16):
      raise config_error(self, "patch_size", self.patch_size, (4, 8, 16))
    if len(self.layers) < 2 or min(self.layers) < 1:
      raise config_error(self, "layers", self.layers, "two or more stage depths >= 1")
    if len(self.embed_dims) != len(self.layers) or len(set(self.embed_dims[1:])) != 1:
      raise config_error(self, "embed_dims", self.embed_dims, "one width per stage, the same for stages 1..")
    if len(self.num_heads) != len(self.layers) or any(d % n for d, n in zip(self.embed_dims, self.num_heads)):
      raise config_error(self, "num_heads", self.num_heads, "one per stage, dividing its embed_dims entry")
    if self.kernel_size % 2 == 0 or self.kernel_size < 1:
      raise config_error(self, "kernel_size", self.kernel_size, "odd sizes >= 1")
    if self.global_pool not in POOLS:
      raise config_error(self, "global_pool", self.global_pool, POOLS)
    if self.global_pool == "token" and self.post_layers < 1:
      raise config_error(self, "global_pool", "token", "'avg' when post_layers=0 (no class token)")
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    if h % (2 * self.patch_size) or w % (2 * self.patch_size):
      raise config_error(self, "img_size", self.img_size, f"multiples of 2 x patch_size = {2 * self.patch_size}")
    check_rates(self, ("drop_rate", "pos_drop_rate", "attn_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    gh, gw = self.grid
    if tuple(images.shape[1:3]) != (2 * self.patch_size * gh, 2 * self.patch_size * gw):
      raise ValueError(f"input images are {images.shape[1]}x{images.shape[2]} but the model was built with "
                       f"img_size={self.img_size}; create it with img_size={images.shape[1]}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = StemPatchEmbed(self.embed_dims[0], self.patch_size, self.stem_hidden_dim, train, name="patch_embed",
                       **kw)(images.astype(self.dtype))
    out, total = {}, sum(self.layers)
    rate = lambda i: self.drop_path_rate * i / max(total - 1, 1)  # global block index i, as timm
    for j in range(self.layers[0]):
      x = Outlooker(self.num_heads[0], self.kernel_size, self.outlook_stride, self.mlp_ratio, self.qkv_bias,
                    self.attn_drop_rate, train, name=f"network_0_{j}", **kw)(x)
    out["stage0"] = x
    x = Downsample(self.embed_dims[1], name="network_1", **kw)(x)  # [B, gh, gw, C]
    pos = self.param("pos_embed", with_axes(trunc_normal_02, (None, None, None, "embed")),
                     (1, gh, gw, self.embed_dims[-1]), self.param_dtype)
    x = nn.Dropout(self.pos_drop_rate)(x + pos.astype(x.dtype), deterministic=not train)
    b, dim = x.shape[0], x.shape[-1]
    x = nn.with_logical_constraint(x.reshape(b, gh * gw, dim), ("batch", "seq", "embed"))
    index = self.layers[0]
    for stage in range(1, len(self.layers)):
      for j in range(self.layers[stage]):
        x = Transformer(self.num_heads[stage], self.mlp_ratio, self.qkv_bias, self.attn_drop_rate, train,
                        name=f"network_{stage + 1}_{j}", **kw)(x, rate(index))
        index += 1
      out[f"stage{stage}"] = x.reshape(b, gh, gw, dim)

    if self.post_layers:
      cls = self.param("cls_token", with_axes(trunc_normal_02, (None, None, "embed")), (1, 1, dim), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, dim)), x], axis=1)
      for i in range(self.post_layers):
        x = ClassBlock(self.num_heads[-1], self.mlp_ratio, self.qkv_bias, attn_drop_rate=self.attn_drop_rate,
                       norm_eps=NORM_EPS, train=train, name=f"post_network_{i}", **kw)(x)
    x = layer_norm(NORM_EPS, name="norm", **kw)(x)
    out["encoded"] = x
    pooled = x[:, 0] if self.global_pool == "token" else x.mean(axis=1)
    out["pre_logits"] = pooled
    if self.num_classes == 0:
      return pooled, out

    head = lambda name: dense(self.num_classes, ("embed", "classes"), name=name, kernel_init=zeros, **kw)
    logits = head("head")(nn.Dropout(self.drop_rate)(pooled, deterministic=not train))
    if self.use_aux_head:
      # token labelling: a class prediction per patch token; the strongest one per class, halved, is added
      tokens = nn.Dropout(self.drop_rate)(x, deterministic=not train)[:, int(self.post_layers > 0):]
      out["logits_cls"], out["logits_aux"] = logits, head("aux_head")(tokens)  # [B, N, classes]
      logits = logits + 0.5 * out["logits_aux"].max(axis=1)
    out["logits"] = logits
    return logits, out


def _register(name, img_size, crop_pct, **arch):
  """Registers `name` as a `VOLO` with architecture fields `arch` and timm's eval crop."""
  register_variant(VOLO, name, crop_pct=crop_pct, img_size=img_size, **arch)


_ARCH = {
    "d1": dict(layers=(4, 4, 8, 2), embed_dims=(192, 384, 384, 384), num_heads=(6, 12, 12, 12)),
    "d2": dict(layers=(6, 4, 10, 4), embed_dims=(256, 512, 512, 512), num_heads=(8, 16, 16, 16)),
    "d3": dict(layers=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512), num_heads=(8, 16, 16, 16)),
    "d4": dict(layers=(8, 8, 16, 4), embed_dims=(384, 768, 768, 768), num_heads=(12, 16, 16, 16)),
    "d5": dict(layers=(12, 12, 20, 4), embed_dims=(384, 768, 768, 768), num_heads=(12, 16, 16, 16), mlp_ratio=4.0,
               stem_hidden_dim=128),
}
# (variant, img_size, crop_pct): timm's pretrained cfgs
for _variant, _size, _crop in (("d1", 224, 0.96), ("d1", 384, 1.0), ("d2", 224, 0.96), ("d2", 384, 1.0),
                               ("d3", 224, 0.96), ("d3", 448, 1.0), ("d4", 224, 0.96), ("d4", 448, 1.15),
                               ("d5", 224, 0.96), ("d5", 448, 1.15), ("d5", 512, 1.15)):
  _register(f"volo_{_variant}_{_size}", _size, _crop, **_ARCH[_variant])
