"""CrossViT: cross-attention multi-scale vision transformer (Chen et al. 2021, arXiv:2103.14899).

Two ViT branches see the image at two patch sizes (12 and 16 px: the small- and large-patch branches, S and
L). Each multi-scale encoder runs both branches' transformer blocks, then exchanges information through the
class tokens only: each branch's class token cross-attends to the other branch's patch tokens
(`jaxvit.layers.cross_attention`, Sec. 3.3). The two class tokens feed two heads whose logits are averaged.
CrossViT-dagger (the paper's CrossViT with a dagger, `_dagger`) replaces the linear patch embedding by three
convolutions.

Input scaling: timm names the models by their input (240 / 408) and makes the large-patch branch see
`int(img_size * img_scale[1])` px (224 / 384), resizing the image with PyTorch's bicubic interpolation
(`F.interpolate(mode="bicubic", align_corners=False)`, Keys' a = -0.75, no antialias); jaxvit reproduces it
exactly (`jaxvit.layers.resize`). Any input size works: each branch's image is resized to its size (or
centre-cropped with `crop_scale`), as timm does. timm's `crossvit.py` is the file followed; parameter names
are its names, the cross-attention fusion's grouped as `fusion_{d}` (see `jaxvit.convert.crossvit`).
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.attention import Attention
from jaxvit.layers.cross_attention import CrossAttentionFusion
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, layer_norm, trunc_normal_02, with_axes, zeros
from jaxvit.layers.mlp import Mlp
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.layers.resize import interpolate_bicubic
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

NORM_EPS = 1e-6


class Block(nn.Module):
  """Pre-norm transformer block (timm's `vision_transformer.Block`): x + DropPath(MHSA(LN(x))), then the MLP."""
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y, _ = Attention(self.num_heads, self.qkv_bias, self.attn_drop_rate, self.proj_drop_rate, name="attn", **kw)(
        layer_norm(NORM_EPS, name="norm1", **kw)(x), train=train)
    x = x + drop_path(self, y, self.drop_path_rate, train=train)
    y = Mlp(int(x.shape[-1] * self.mlp_ratio), drop_rate=self.proj_drop_rate, name="mlp", **kw)(
        layer_norm(NORM_EPS, name="norm2", **kw)(x), train=train)
    return x + drop_path(self, y, self.drop_path_rate, train=train)


class ConvPatchEmbed(nn.Module):
  """CrossViT-dagger's patch embedding: conv 7x7 / 4 -> ReLU -> conv 3x3 -> ReLU -> conv 3x3 (widths D/4, D/2,
  D), with strides 4, 3, 1 for 12 px patches and 4, 2, 2 for 16 px ones; timm's `proj.0 / .2 / .4`.
  `[B, H, W, C] -> [B, H / p * W / p, D]`."""
  embed_dim: int
  patch_size: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    # (kernel, stride, padding) per conv
    convs = {12: ((7, 4, 3), (3, 3, 0), (3, 1, 1)), 16: ((7, 4, 3), (3, 2, 1), (3, 2, 1))}[self.patch_size]
    widths = (self.embed_dim // 4, self.embed_dim // 2, self.embed_dim)
    for i, ((k, s, p), width) in enumerate(zip(convs, widths)):
      if i:
        x = nn.relu(x)
      x = nn.Conv(width, (k, k), strides=s, padding=((p, p), (p, p)), dtype=self.dtype, param_dtype=self.param_dtype,
                  kernel_init=with_axes(nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")),
                  bias_init=with_axes(zeros, ("conv_out",)), name=f"proj_{2 * i}")(x)
    return x.reshape(x.shape[0], -1, x.shape[-1])


class MultiScaleBlock(nn.Module):
  """One multi-scale transformer encoder (timm's `MultiScaleBlock`): `depth[d]` blocks on branch d
  (`blocks_{d}_{i}`), then each branch's class token cross-attends to the next branch's patch tokens
  (`fusion_{d}`, at that branch's width and head count)."""
  depth: tuple  # timm's per-encoder config: (blocks of branch 0, of branch 1, ..., cross-attention blocks)
  num_heads: tuple
  mlp_ratio: tuple
  drop_path_rates: tuple  # timm's `dpr_` slice for this encoder: block i uses [i], the fusion the last
  qkv_bias: bool = True
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, xs, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    n = len(xs)
    outs = []
    for d, x in enumerate(xs):
      for i in range(self.depth[d]):
        x = Block(self.num_heads[d], self.mlp_ratio[d], self.qkv_bias, self.proj_drop_rate, self.attn_drop_rate,
                  float(self.drop_path_rates[i]), name=f"blocks_{d}_{i}", **kw)(x, train=train)
      outs.append(x)
    fused = []
    for d, x in enumerate(outs):
      other = (d + 1) % n
      cls = CrossAttentionFusion(self.num_heads[other], max(self.depth[-1], 1), self.qkv_bias, self.attn_drop_rate,
                                 self.proj_drop_rate, float(self.drop_path_rates[-1]), NORM_EPS, name=f"fusion_{d}",
                                 **kw)(x[:, :1], outs[other][:, 1:], train=train)
      fused.append(jnp.concatenate([cls, x[:, 1:]], axis=1))
    return fused


class CrossViT(nn.Module):
  """CrossViT classifier on NHWC images; timm's `CrossVit`. `(logits, out)`: `out` holds `pre_logits`
  (the branches' pooled features concatenated, `[B, sum(embed_dim)]`), `logits`, each branch's head logits
  `logits_{b}` (their mean is `logits`), final normalised tokens `tokens_{b}` and `block{k}_{b}` after
  multi-scale encoder k."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 240  # the small-patch branch's input; the reference resolution
  img_scale: tuple = (1.0, 224 / 240)  # each branch's image size relative to img_size
  patch_size: tuple = (12, 16)
  in_chans: int = 3
  embed_dim: tuple = (96, 192)
  depth: tuple = ((1, 4, 0),) * 3  # per multi-scale encoder: blocks of each branch, then cross-attention blocks
  num_heads: tuple = (3, 3)
  mlp_ratio: tuple = (4.0, 4.0, 1.0)  # per branch (timm's third entry is unused)
  multi_conv: bool = False  # CrossViT-dagger's three-convolution patch embedding
  crop_scale: bool = False  # centre-crop instead of resizing a branch's image when it is smaller
  qkv_bias: bool = True
  global_pool: str = "token"  # "token" (class tokens) or "avg" (mean of the patch tokens)
  drop_rate: float = 0.0  # before the heads
  pos_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_branches(self) -> int:
    return len(self.patch_size)

  @property
  def num_features(self) -> int:
    """Width of `out["pre_logits"]`."""
    return sum(self.embed_dim)

  @property
  def branch_sizes(self) -> list[tuple[int, int]]:
    """Each branch's image size (h, w): `int(img_size * scale)`, as timm's `img_size_scaled`."""
    size = (self.img_size,) * 2 if isinstance(self.img_size, int) else tuple(self.img_size)
    return [tuple(int(s * scale) for s in size) for scale in self.img_scale]

  @property
  def grids(self) -> list[tuple[int, int]]:
    return [(h // p, w // p) for (h, w), p in zip(self.branch_sizes, self.patch_size)]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    n = self.num_branches
    for field in ("img_scale", "embed_dim", "num_heads"):
      if len(getattr(self, field)) != n:
        raise config_error(self, field, getattr(self, field), f"one entry per branch ({n}, as patch_size)")
    if len(self.mlp_ratio) < n:
      raise config_error(self, "mlp_ratio", self.mlp_ratio, f"at least one entry per branch ({n})")
    if n < 2:
      raise config_error(self, "patch_size", self.patch_size, "two or more branches' patch sizes")
    if not self.depth or any(len(c) != n + 1 or min(c[:n]) < 1 or c[n] < 0 for c in self.depth):
      raise config_error(self, "depth", self.depth, f"one tuple per multi-scale encoder of {n} block counts >= 1 and "
                                                     f"a cross-attention block count >= 0 (0 and 1: one block)")
    if self.multi_conv and any(p not in (12, 16) for p in self.patch_size):
      raise config_error(self, "patch_size", self.patch_size, "12 or 16 with multi_conv=True")
    for (h, w), p in zip(self.branch_sizes, self.patch_size):
      if h % p or w % p or h < p or w < p:
        raise config_error(self, "img_size", self.img_size, f"sizes whose branch images {self.branch_sizes} "
                                                             f"(img_size x img_scale) are multiples of {self.patch_size}")
    for dim, heads in zip(self.embed_dim, self.num_heads):
      if dim % heads:
        raise config_error(self, "num_heads", self.num_heads, f"divisors of embed_dim={self.embed_dim}")
    if self.global_pool not in ("token", "avg"):
      raise config_error(self, "global_pool", self.global_pool, ("token", "avg"))
    check_rates(self, ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"))

  def drop_path_rates(self) -> list[tuple]:
    """Per encoder, timm's slice of one linear ramp over the largest branch's blocks (plus cross-attention blocks
    in timm's count)."""
    n = self.num_branches
    total = sum(sum(c[n - 1:]) for c in self.depth)  # timm: the last branch's blocks + cross-attention blocks
    rates = np.linspace(0.0, self.drop_path_rate, total, dtype=np.float32).tolist()
    out, start = [], 0
    for c in self.depth:
      length = max(c[:n]) + c[n]
      out.append(tuple(rates[start:start + length]) or (0.0,))
      start += length
    return out

  def _scale_image(self, images, size):
    """timm's `scale_image`: the branch's image, resized (bicubic, PyTorch's) or centre-cropped to `size`."""
    h, w = images.shape[1:3]
    if (h, w) == tuple(size):
      return images
    if self.crop_scale and size[0] <= h and size[1] <= w:
      top, left = int(round((h - size[0]) / 2.0)), int(round((w - size[1]) / 2.0))
      return images[:, top:top + size[0], left:left + size[1]]
    return interpolate_bicubic(images, size)

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b = images.shape[0]
    xs = []
    for i, (size, p, dim) in enumerate(zip(self.branch_sizes, self.patch_size, self.embed_dim)):
      x = self._scale_image(images.astype(self.dtype), size)
      if self.multi_conv:
        x = ConvPatchEmbed(dim, p, name=f"patch_embed_{i}", **kw)(x)
      else:
        x = PatchEmbed(dim, p, name=f"patch_embed_{i}", **kw)(x)  # [B, N_i, D_i]
      cls = self.param(f"cls_token_{i}", with_axes(trunc_normal_02, (None, None, "embed")), (1, 1, dim),
                       self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, dim)), x], axis=1)
      pos = self.param(f"pos_embed_{i}", with_axes(trunc_normal_02, (None, "seq", "embed")), (1, x.shape[1], dim),
                       self.param_dtype)
      x = nn.Dropout(self.pos_drop_rate)(x + pos.astype(x.dtype), deterministic=not train)
      xs.append(nn.with_logical_constraint(x, ("batch", "seq", "embed")))

    out = {}
    for k, (config, rates) in enumerate(zip(self.depth, self.drop_path_rates())):
      xs = MultiScaleBlock(tuple(config), tuple(self.num_heads), tuple(self.mlp_ratio), rates, self.qkv_bias,
                           self.proj_drop_rate, self.attn_drop_rate, name=f"blocks_{k}", **kw)(xs, train=train)
      out.update({f"block{k}_{i}": x for i, x in enumerate(xs)})

    pooled = []
    for i, x in enumerate(xs):
      x = out[f"tokens_{i}"] = layer_norm(NORM_EPS, name=f"norm_{i}", **kw)(x)
      pooled.append(x[:, 0] if self.global_pool == "token" else x[:, 1:].mean(axis=1))
    out["pre_logits"] = jnp.concatenate(pooled, axis=-1)
    if self.num_classes == 0:
      out["logits"] = out["pre_logits"]
      return out["pre_logits"], out
    for i, x in enumerate(pooled):
      x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
      out[f"logits_{i}"] = dense(self.num_classes, ("embed", "classes"), name=f"head_{i}",
                                 kernel_init=nn.initializers.zeros, **kw)(x)
    logits = out["logits"] = jnp.mean(jnp.stack([out[f"logits_{i}"] for i in range(len(pooled))]), axis=0)
    return logits, out


def _register(name, img_size=240, crop_pct=0.875, **arch):
  """Registers `name` as a `CrossViT`; the large-patch branch sees 224 px of a 240 px input, 384 of 408."""
  scale = {240: 224 / 240, 408: 384 / 408}[img_size]
  register_variant(CrossViT, name, crop_pct=crop_pct, img_size=img_size, img_scale=(1.0, scale), **arch)


# timm's variants (the paper's CrossViT-Ti/S/B/9/15/18): widths of the S and L branches, L-branch blocks per
# encoder, heads, MLP ratio
_ARCHS = {"tiny": ((96, 192), 4, 3, 4.0), "small": ((192, 384), 4, 6, 4.0), "base": ((384, 768), 4, 12, 4.0),
          "9": ((128, 256), 3, 4, 3.0), "15": ((192, 384), 5, 6, 3.0), "18": ((224, 448), 6, 7, 3.0)}


def _arch(size):
  dims, blocks, heads, ratio = _ARCHS[size]
  return dict(embed_dim=dims, depth=((1, blocks, 0),) * 3, num_heads=(heads, heads), mlp_ratio=(ratio, ratio, 1.0))


for _size in _ARCHS:
  _register(f"crossvit_{_size}_240", **_arch(_size))
for _size in ("9", "15", "18"):
  _register(f"crossvit_{_size}_dagger_240", multi_conv=True, **_arch(_size))
for _size in ("15", "18"):
  _register(f"crossvit_{_size}_dagger_408", img_size=408, crop_pct=1.0, multi_conv=True, **_arch(_size))
