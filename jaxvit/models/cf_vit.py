"""CF-ViT, coarse-to-fine vision transformer (Chen et al. 2023, "CF-ViT: A General Coarse-to-Fine Method for Vision
Transformer", arXiv:2211.03992); the official ChenMnZ/CF-ViT `deit/models_deit.py` (`CFVisionTransformer`) @ HEAD
and its `utils.get_index` are the files followed (timm has no CF-ViT).

One DeiT runs twice with shared weights:
1. *coarse inference stage*: the image bilinearly resized to `coarse_size` (align_corners=True, as the official
   training loop) gives `(coarse_size / 16)^2` tokens; its class-token logits are an early exit
   (`out["exit_logits0"]`).
2. *fine inference stage* at `img_size` (twice the coarse grid): the fine patch embeddings plus the coarse stage's
   output tokens through a reuse block (LayerNorm + MLP, "feature reuse", nearest-upsampled 2x) and the fine
   position embedding. *Informative region identification*: the class attention of the coarse stage, averaged
   over heads and kept as an exponential moving average over blocks 3..11 (`ema_beta` 0.99), picks the
   ceil(`keep_ratio` x N_coarse) most informative coarse tokens; each is replaced by its 2x2 fine tokens, the
   others keep their coarse embeddings. With 7x7 coarse tokens: 1 + 4 x 25 + 24 = 125 tokens instead of 197.
Training: cross-entropy on the fine logits plus KL(softmax(fine) (stopped) || coarse), batch mean (the official
`engine_deit.py`); in jaxvit `config.exit_loss = dict(weights=(0, 1), distill_weight=1, temperature=1)`. The
official run turns `informative_selection` on after epoch 200 of 300: before it the fine stage keeps all its tokens
and, an official quirk kept here, adds no fine position embedding.

Parameter names are the ViT's (`patch_embed`, `tokens/cls_token`, `pos_embed`, `encoder/blocks_i`, `norm`, `head`),
so a DeiT's weights initialise it, plus `pos_embed_coarse`, `reuse_norm` and `reuse_mlp`. Returns
`(fine logits, out)`; `out` holds `exit_logits0` (coarse), `cls_attention` `[B, N_coarse]` (the global attention),
`informative` (the coarse indices refined, most informative first), and the coarse stage's normalised output tokens
(`coarse_encoded`) and embeddings (`coarse_embed`) the fine stage reuses.
*Dynamic inference* (the official `dynamic_inference.py`): `jaxvit.dynamic.exits.StagedEarlyExit` runs the coarse
stage on the batch (`coarse_only=True`) and the fine stage (`fine_from=`) only on the examples whose max
softmax(coarse) did not pass the threshold (`exit_stages`).
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit import layers
from jaxvit.layers.resize import resize_bilinear_align_corners
from jaxvit.models.vit import Encoder, VisionTransformer
from jaxvit.registry import register_variant
from jaxvit.utils import config_error

REUSED = ("coarse_encoded", "coarse_embed", "cls_attention")  # the coarse stage's `out` entries the fine stage takes


def fine_indices(coarse_index, coarse_grid: int):
  """The 2x2 fine tokens (row-major on a `2 coarse_grid` grid) of each coarse token index `[B, k]` -> `[B, 4k]`,
  ordered as the official `get_index`: every top-left, then every top-right, bottom-left, bottom-right."""
  row, col = jnp.divmod(coarse_index, coarse_grid)
  top_left = 2 * row * (2 * coarse_grid) + 2 * col
  return jnp.concatenate([top_left, top_left + 1, top_left + 2 * coarse_grid, top_left + 2 * coarse_grid + 1],
                         axis=1)


class CFViT(VisionTransformer):
  """CF-ViT on a DeiT (class token, learned position embeddings); `img_size` is the fine stage's input."""
  coarse_size: int = 112
  keep_ratio: float = 0.5  # the official alpha: the share of coarse tokens refined
  ema_beta: float = 0.99
  ema_blocks: Sequence[int] = (3, 4, 5, 6, 7, 8, 9, 10, 11)
  informative_selection: bool = True

  def validate(self):
    super().validate()
    def bad(field, value, accepted):
      raise config_error(self, field, value, accepted)
    if self.grid != (2 * (self.coarse_size // self.patch_size),) * 2 or self.coarse_size % self.patch_size:
      bad("coarse_size", self.coarse_size, f"a multiple of patch_size={self.patch_size} half of img_size="
                                           f"{self.img_size} (square)")
    if not (self.class_token and self.pos_embed == "learn" and self.global_pool == "token"):
      bad("pos_embed", self.pos_embed, "'learn', with class_token=True and global_pool='token' (CF-ViT is a DeiT)")
    for field in ("dist_token", "reg_tokens", "reduction", "exits", "scan"):
      if getattr(self, field):
        bad(field, getattr(self, field), "off for CF-ViT")
    if not 0.0 < self.keep_ratio <= 1.0:
      bad("keep_ratio", self.keep_ratio, "(0, 1]")
    if not all(0 <= b < self.depth for b in self.ema_blocks):
      bad("ema_blocks", self.ema_blocks, f"blocks 0..{self.depth - 1}")

  @property
  def coarse_grid(self) -> int:
    return self.coarse_size // self.patch_size

  @property
  def kept(self) -> int:
    """Coarse tokens refined into 2x2 fine tokens."""
    return math.ceil(self.keep_ratio * self.coarse_grid ** 2)

  @property
  def has_exits(self) -> bool:
    """The coarse stage is an exit (`exit_logits0`): the multi-exit loss and the early-exit sweep apply."""
    return True

  def exit_costs(self) -> tuple[list[float], list[int]]:
    """`(macs, depths)` of leaving after the coarse stage or after both (`jaxvit.dynamic.exits.exit_costs`)."""
    from jaxvit.bench.flops import count_macs
    from jaxvit.utils import init_variables
    variables = jax.eval_shape(lambda: init_variables(self))
    images = jax.ShapeDtypeStruct((1, self.img_size, self.img_size, 3), jnp.float32)
    macs = [count_macs(self, variables, images, coarse_only=only)["total"] for only in (True, False)]
    return macs, [self.depth, 2 * self.depth]

  def exit_stages(self) -> list:
    """The official `forward_early_exit` as `jaxvit.dynamic.exits.StagedEarlyExit` stages: the coarse stage on the
    batch, then the fine stage on the images and reused coarse outputs (`REUSED`) of the examples not exited."""
    coarse = lambda variables, images: self.apply(variables, images, coarse_only=True)  # noqa: E731
    fine = lambda variables, inputs: self.apply(variables, inputs[0], fine_from=inputs[1])  # noqa: E731
    return [(coarse, lambda images, out: (images, {k: out[k] for k in REUSED})), (fine, None)]

  @nn.compact
  def __call__(self, images, *, train: bool = False, coarse_only: bool = False, fine_from: dict | None = None):
    """`(fine logits, out)`; with `coarse_only`, `(coarse logits, out)` without running the fine stage; with
    `fine_from` (the coarse stage's `out` for these images, or its `REUSED` entries) only the fine stage runs."""
    if tuple(images.shape[1:3]) != (self.img_size, self.img_size):
      raise ValueError(f"input images are {images.shape[1]}x{images.shape[2]} but the model was built with "
                       f"img_size={self.img_size}; create it with img_size={images.shape[1]}")
    if coarse_only and fine_from is not None:
      raise ValueError("CFViT: coarse_only=True runs the coarse stage, fine_from= the fine stage; pass at most one")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    g, c = self.coarse_grid, self.embed_dim
    pos_init = layers.with_axes(nn.initializers.truncated_normal(0.02), (None, "seq", "embed"))
    block = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                 init_values=self.init_values, proj_drop_rate=self.proj_drop_rate,
                 attn_drop_rate=self.attn_drop_rate, return_attention=True, **kw)
    shared = dict(  # one DeiT, both stages
        patch_embed=layers.PatchEmbed(c, self.patch_size, name="patch_embed", **kw),
        prefix=layers.PrefixTokens(param_dtype=self.param_dtype, name="tokens"),
        pos_coarse=self.param("pos_embed_coarse", pos_init, (1, g * g + 1, c), self.param_dtype),
        pos_fine=self.param("pos_embed", pos_init, (1, 4 * g * g + 1, c), self.param_dtype),
        encoder=Encoder(self.depth, block, self.drop_path_rate, train=train, name="encoder"),
        norm=layers.layer_norm(name="norm", **kw),
        head=layers.dense(self.num_classes, ("embed", "classes"), name="head", kernel_init=nn.initializers.zeros,
                          **kw),
        pos_drop=lambda x: nn.Dropout(self.pos_drop_rate)(x, deterministic=not train))
    out = self._coarse_stage(images, **shared) if fine_from is None else dict(fine_from)
    if coarse_only:
      return out["exit_logits0"], out
    return self._fine_stage(images, out, train, **shared)

  def _coarse_stage(self, images, *, patch_embed, prefix, pos_coarse, encoder, norm, head, pos_drop, **unused):
    """The coarse inference stage: its logits (`exit_logits0`), plus what the fine stage reuses (`REUSED`)."""
    coarse = resize_bilinear_align_corners(images.astype(self.dtype), self.coarse_size)
    coarse_embed = pos_drop(prefix(patch_embed(coarse)) + pos_coarse.astype(self.dtype))
    x, coarse_out = encoder(coarse_embed)
    x = norm(x)
    ema = 0.0
    for i in self.ema_blocks:  # the class row of the head-averaged attention, as an EMA over blocks
      ema = self.ema_beta * ema + (1 - self.ema_beta) * coarse_out[f"attn{i}"][:, :, 0].astype(jnp.float32).mean(1)
    return dict(exit_logits0=head(x[:, 0]), coarse_encoded=x, coarse_embed=coarse_embed, cls_attention=ema[:, 1:])

  def _fine_stage(self, images, out, train, *, patch_embed, prefix, pos_fine, encoder, norm, head, pos_drop,
                  **unused):
    """The fine inference stage on `images` from the coarse stage's `out`: feature reuse, then informative region
    identification. Adds `informative`, `encoded`, `pre_logits` and `logits` to `out`."""
    b, g, c = images.shape[0], self.coarse_grid, self.embed_dim
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    reuse = layers.layer_norm(name="reuse_norm", **kw)(out["coarse_encoded"][:, 1:])
    reuse = layers.Mlp(int(self.mlp_ratio * c), drop_rate=self.drop_rate, name="reuse_mlp", **kw)(reuse, train=train)
    reuse = jnp.repeat(jnp.repeat(reuse.reshape(b, g, g, c), 2, axis=1), 2, axis=2).reshape(b, 4 * g * g, c)
    x = prefix(patch_embed(images)) + jnp.pad(reuse, ((0, 0), (1, 0), (0, 0)))
    if self.informative_selection:
      order = jnp.argsort(-out["cls_attention"], axis=1)  # most informative first
      out["informative"] = informative = order[:, :self.kept]
      fine_embed = x + pos_fine.astype(self.dtype)
      take = lambda tokens, index: jnp.take_along_axis(tokens, index[..., None], axis=1)  # noqa: E731
      x = jnp.concatenate([fine_embed[:, :1], take(fine_embed, fine_indices(informative, g) + 1),
                           take(out["coarse_embed"], order[:, self.kept:] + 1)], axis=1)
    x, _ = encoder(pos_drop(x))
    x = norm(x)
    out["encoded"], out["pre_logits"] = x, x[:, 0]
    out["logits"] = head(x[:, 0])
    return out["logits"], out


_DEIT_S = dict(embed_dim=384, depth=12, num_heads=6)
register_variant(CFViT, "cf_deit_small_224", img_size=224, coarse_size=112, **_DEIT_S)
register_variant(CFViT, "cf_deit_small_288", img_size=288, coarse_size=144, **_DEIT_S)
