"""PVT, Pyramid Vision Transformer (Wang et al. 2021, "Pyramid Vision Transformer: A Versatile Backbone for Dense
Prediction without Convolutions", arXiv:2102.12122). timm has no PVT v1: the official `whai362/PVT`
`classification/pvt.py` (branch v2 @57e2dfaa5a46f9050d76f306a4fcd9a7c061f520, last changed in 33280517) is the
file followed; parameter names mirror its modules.

Four stages (sec. 3.2, Fig. 3) at strides 4, 8, 16, 32, each: a non-overlapping patch embedding + LayerNorm
(`patch_embed{k}`, Twins' `PatchEmbedNorm`), a learned position embedding (`pos_embed{k}`), and pre-norm
transformer blocks (`block{k}_{j}`: Twins-PCPVT's block, the same) whose attention is spatial-reduction attention
(SRA, sec. 3.3, eq. 3-4, `layers.sr_attention`: keys / values from a map reduced `sr_ratio` times). The last stage
prepends a class token (`cls_token`, with its own position in `pos_embed4`), attends with `sr_ratio` 1, and the
classifier reads the class token after the final LayerNorm (`norm`).

Other input sizes (the official `_get_pos_embed`): each position embedding is bilinearly resized
(`F.interpolate(mode="bilinear", align_corners=False)`) from the reference grid to the stage's grid; the class
token's position is kept. The official code resizes stages 2-4 always (it compares every stage with stage 1's patch
count), so at the reference size those are identity resizes, which fvcore counts (4 per output element); jaxvit
runs them too, so its MAC count equals the official fvcore count. Stage 1 is resized when its grid differs from the
reference grid (the official compares areas: a non-square input with stage 1's area is not resized there, and one
whose stage-2 area equals stage 1's fails). Like torch's strided conv, patch embeddings drop the rows / columns that
do not fill a whole patch, so any input of at least `32 x 32` works.

Returns `(logits, out)`; `out` holds `stage0` ... `stage3` (token maps `[B, H, W, C]`, the last after the final
norm, without the class token), `pre_logits` (the class token), `logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import linear_head
from jaxvit.layers.init import layer_norm, trunc_normal_02, with_axes
from jaxvit.models.twins import Block, PatchEmbedNorm
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, check_stages, config_error


def _bilinear_taps(in_size: int, out_size: int):
  """PyTorch's `align_corners=False` bilinear source pixels and weights along one axis: `(low, high, w_low,
  w_high)`, source coordinate (in / out) (i + 0.5) - 0.5 clamped at 0, computed in float32 as PyTorch does."""
  scale = np.float32(in_size / out_size)
  src = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
  low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  frac = (src - low).astype(np.float32)
  return low, high, 1 - frac, frac


def interpolate_bilinear(x, size: tuple[int, int]):
  """`F.interpolate(x, size, mode="bilinear", align_corners=False)` of an NHWC `x`: each output pixel a weighted
  sum of its four source neighbours, `[B, H, W, C] -> [B, h, w, C]`, as one product of the gathered taps
  `[B, 2, h, 2, w, C]` with the weights `[h, w, 2, 2]` (4 MACs per output element, fvcore's bilinear cost)."""
  rl, rh, rwl, rwh = _bilinear_taps(x.shape[1], size[0])
  cl, ch, cwl, cwh = _bilinear_taps(x.shape[2], size[1])
  rows = jnp.stack([x[:, rl], x[:, rh]], axis=1)  # [B, 2, h, W, C]
  taps = jnp.stack([rows[:, :, :, cl], rows[:, :, :, ch]], axis=3)  # [B, 2, h, 2, w, C]
  weights = np.einsum("ai,bj->ijab", np.stack([rwl, rwh]), np.stack([cwl, cwh]))  # [h, w, 2, 2]
  return jnp.einsum("xaibjc,ijab->xijc", taps, jnp.asarray(weights, x.dtype))


class PyramidVisionTransformer(nn.Module):
  """PVT classifier on NHWC images; the official `PyramidVisionTransformer`."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224  # the reference resolution the position embeddings are stored for
  patch_size: int = 4  # stage 1's patch; later stages merge 2 x 2
  in_chans: int = 3
  depths: Sequence[int] = (3, 4, 6, 3)
  embed_dims: Sequence[int] = (64, 128, 320, 512)
  num_heads: Sequence[int] = (1, 2, 5, 8)
  mlp_ratios: Sequence[float] = (8.0, 8.0, 4.0, 4.0)
  sr_ratios: Sequence[int] = (8, 4, 2, 1)  # SRA's key / value reduction per stage; the last must be 1 (class token)
  drop_rate: float = 0.0  # the official `drop_rate`: after each position embedding and in every block (no head dropout)
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.embed_dims[-1]

  def stage_sizes(self, hw) -> list[tuple[int, int]]:
    """Token-map sizes of the stages for an `(H, W)` input: strided convs round down."""
    h, w = hw[0] // self.patch_size, hw[1] // self.patch_size
    return [(h // 2 ** i, w // 2 ** i) for i in range(len(self.depths))]

  def _hw(self):
    return (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    check_stages(self, ("embed_dims", "num_heads", "mlp_ratios", "sr_ratios"))
    for dim, heads in zip(self.embed_dims, self.num_heads):
      if dim % heads:
        raise config_error(self, "num_heads", self.num_heads, f"divisors of embed_dims={self.embed_dims}")
    if self.sr_ratios[-1] != 1 or min(self.sr_ratios) < 1:
      raise config_error(self, "sr_ratios", self.sr_ratios, "ratios >= 1, the last 1 (the last stage attends "
                                                            "with the class token, which a reduction cannot hold)")
    if self.patch_size < 1:
      raise config_error(self, "patch_size", self.patch_size, "patch sizes >= 1")
    self.check_input(self._hw(), "img_size", self.img_size)
    check_rates(self, ("drop_rate", "attn_drop_rate", "drop_path_rate"))

  def check_input(self, hw, field, value):
    """Every stage's map must be at least its `sr_ratio` (and 1) on each side."""
    sizes = self.stage_sizes(hw)
    if any(min(h, w) < max(r, 1) for (h, w), r in zip(sizes, self.sr_ratios)):
      raise config_error(self, field, value, f"sizes whose stage maps {sizes} are at least "
                                             f"sr_ratios={self.sr_ratios} (and 1) on each side")

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    self.validate()
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.check_input(images.shape[1:3], "input size", tuple(images.shape[1:3]))
    reference = self.stage_sizes(self._hw())
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    x, out, index, last = images.astype(self.dtype), {}, 0, len(self.depths) - 1
    for k, depth in enumerate(self.depths):
      p = self.patch_size if k == 0 else 2
      b, hh, ww, _ = x.shape
      h, w = hh // p, ww // p
      x = PatchEmbedNorm(self.embed_dims[k], p, name=f"patch_embed{k + 1}", **kw)(x[:, :h * p, :w * p])
      dim = self.embed_dims[k]
      (rh, rw), prefix = reference[k], int(k == last)
      pos = self.param(f"pos_embed{k + 1}", with_axes(trunc_normal_02, (None, "seq", "embed")),
                       (1, prefix + rh * rw, dim), self.param_dtype).astype(self.dtype)
      grid = pos[:, prefix:]
      if k > 0 or (h, w) != (rh, rw):  # the official resizes stages 2-4 even to their own size (see the docstring)
        grid = interpolate_bilinear(grid.reshape(1, rh, rw, dim), (h, w)).reshape(1, h * w, dim)
      x = x.reshape(b, h * w, dim)
      if k == last:  # [B, N, C] -> [B, 1 + N, C], the class token keeping its own position
        cls = self.param("cls_token", with_axes(trunc_normal_02, (None, None, "embed")), (1, 1, dim),
                         self.param_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, dim)), x], axis=1)
        grid = jnp.concatenate([pos[:, :1], grid], axis=1)
      x = nn.Dropout(self.drop_rate)(x + grid, deterministic=not train)
      # blocks work on maps; the last stage's `1 + N` tokens are a 1 x (1 + N) map (sr_ratio 1: only flattened)
      x = x.reshape(b, h, w, dim) if k < last else x[:, None]
      for j in range(depth):
        x = Block(self.num_heads[k], self.mlp_ratios[k], self.sr_ratios[k], 1, self.drop_rate, self.attn_drop_rate,
                  train, name=f"block{k + 1}_{j}", **kw)(x, float(rates[index]))
        index += 1
      out[f"stage{k}"] = x
    x = layer_norm(1e-6, name="norm", **kw)(x[:, 0])  # [B, 1 + N, C]
    out[f"stage{last}"] = x[:, 1:].reshape(x.shape[0], h, w, x.shape[-1])
    out["pre_logits"] = pooled = x[:, 0]
    out["logits"] = linear_head(pooled, self.num_classes, 0.0, train, **kw)
    return out["logits"], out


def _register(name, **arch):
  """Registers `name` as a `PyramidVisionTransformer` with fields `arch` (the official eval crop 0.875, DeiT's)."""
  register_variant(PyramidVisionTransformer, name, **arch)


# the official pvt.py's ImageNet variants (qkv_bias=True, LayerNorm eps 1e-6); pvt_huge_v2 has no checkpoint
_register("pvt_tiny", depths=(2, 2, 2, 2))
_register("pvt_small", depths=(3, 4, 6, 3))
_register("pvt_medium", depths=(3, 4, 18, 3))
_register("pvt_large", depths=(3, 8, 27, 3))
