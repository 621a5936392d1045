"""Vision Transformer (ViT, arXiv:2010.11929), DeiT (arXiv:2012.12877) and DeiT-III (arXiv:2204.07118).

One pre-norm transformer family: `VisionTransformer` covers class / distillation / register tokens,
learned or sincos position embeddings, rotary ones (RoPE-ViT, arXiv:2403.13298: timm's `eva.py` models), CPVT's
conditional one (PEG after chosen blocks, arXiv:2102.10882; the `cpvt_*` models), FIRE's learned relative attention
bias (arXiv:2310.04418) and LRPE's unitary query / key encoding (arXiv:2307.09270), LayerScale, token or average
pooling, attention-free token mixers (`mixer=`, for ablations), and a `scan` + `remat` block stack. Parameter names
mirror timm's `vision_transformer.py` / `deit.py` so weights convert one to one (`jaxvit.convert`). Returns
`(logits, out)`; `out` holds `block{i}` tokens, `encoded`, `pre_logits`, for distilled models `logits_cls` /
`logits_dist`, with `return_attention` `attn{i}` `[B, H, N, N]`, `keys{i}` (head-averaged keys) and `values{i}`
`[B, H, N, d]`, and with `exits` `exit_logits{i}` (and for LGViT's heads `exit_features{i}`, `jaxvit.dynamic`).
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.dynamic import exits, reduction as reduction_lib
from jaxvit.layers.token_mixer import GRID_MIXERS, MIXERS
from jaxvit.models.vit_encoder import Block, Encoder  # noqa: F401 (Block: re-exported)
from jaxvit.registry import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD, register_variant

ABS_POS_EMBEDS = ("learn", "sincos", "none")  # added to the tokens once
QK_POS_EMBEDS = tuple(f"rope_{kind}" for kind in layers.ROPES) + ("lrpe",)  # turn queries and keys in every block
# `pos_embed` joins them with "+": FIRE adds a relative bias to every block's attention logits, PEG (CPVT) conditions
# the tokens on their neighbourhood after the blocks `peg_blocks`
POS_EMBEDS = ABS_POS_EMBEDS + QK_POS_EMBEDS + ("fire", "peg")


class VisionTransformer(nn.Module):
  """ViT / DeiT / DeiT-III classifier on NHWC images; timm's `VisionTransformer` (+ `Distilled`)."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  patch_size: int = 16
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  init_values: Optional[float] = None  # LayerScale init (DeiT-III: 1e-6); None = no LayerScale
  class_token: bool = True
  dist_token: bool = False  # DeiT distillation token + second head `head_dist`
  reg_tokens: int = 0
  no_embed_class: bool = False  # DeiT-III: position embedding on patches only
  pos_embed: str = "learn"  # POS_EMBEDS, "+"-joined (`position_parts`): "learn+rope_mixed", "peg", "sincos+lrpe+fire"
  rope_theta: Optional[float] = None  # RoPE / LRPE frequency base; None: layers.DEFAULT_THETA of the kind (LRPE: axial)
  peg_blocks: tuple = (0,)  # with pos_embed "peg": the blocks a PEG follows (CPVT: (0,); its "0-5" variant: 0 ... 5)
  mixer: str = "attention"  # token mixer of every block, one of MIXERS (jaxvit/layers/token_mixer.py)
  global_pool: str = "token"  # one of layers.POOLS
  fc_norm: Optional[bool] = None  # norm after pooling instead of before; None = (global_pool != "token")
  drop_rate: float = 0.0  # before the head
  pos_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  return_attention: bool = False
  reduction: Optional[dict] = None  # token reduction: dict(kind="tome", r=13), dict(kind="evit", keep_rate=0.7)
  exits: Optional[dict] = None  # internal classifiers: dict(blocks=(3, 6, 9)) -> out["exit_logits3"], ...
  scan: bool = False
  remat: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def grid(self) -> tuple[int, int]:
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    return h // self.patch_size, w // self.patch_size

  @property
  def num_features(self) -> int:
    """Width of `out["pre_logits"]`."""
    return self.embed_dim

  @property
  def num_prefix_tokens(self) -> int:
    return int(self.class_token) + int(self.dist_token) + self.reg_tokens

  @property
  def position_parts(self) -> tuple[str, ...]:
    """`pos_embed`'s parts: at most one absolute (ABS_POS_EMBEDS), one turning queries and keys (QK_POS_EMBEDS), and
    "fire" and "peg" at most once each."""
    parts = tuple(self.pos_embed.split("+"))
    groups = (ABS_POS_EMBEDS, QK_POS_EMBEDS, ("fire",), ("peg",))
    if any(p not in POS_EMBEDS for p in parts) or any(sum(p in g for p in parts) > 1 for g in groups):
      raise ValueError(f"{type(self).__name__}: pos_embed={self.pos_embed!r}; accepted: one of {POS_EMBEDS}, or "
                       f"several joined with '+', at most one of each group {groups} (e.g. 'learn+rope_mixed', "
                       f"'peg+fire')")
    return parts

  @property
  def position_encoding(self) -> tuple[str, str]:
    """`(absolute, rotary)` from `pos_embed`: one of ABS_POS_EMBEDS ("none" if unnamed), and a RoPE kind or ""
    (LRPE, FIRE and PEG: `position_parts`)."""
    parts = self.position_parts
    absolute = [p for p in parts if p in ABS_POS_EMBEDS]
    rope = [p[len("rope_"):] for p in parts if p.startswith("rope_")]
    return (absolute or ["none"])[0], (rope or [""])[0]

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    def bad(field, value, accepted):
      raise ValueError(f"{type(self).__name__}: {field}={value!r}; accepted: {accepted}")
    _, rope = self.position_encoding
    parts = self.position_parts
    in_attention = rope or "lrpe" in parts or "fire" in parts  # encodings that change attention itself
    if self.mixer not in MIXERS:
      bad("mixer", self.mixer, MIXERS)
    if self.mixer != "attention":
      for field, value in (("pos_embed", in_attention and self.pos_embed), ("reduction", self.reduction),
                           ("return_attention", self.return_attention)):
        if value:
          bad(field, value, f"{'no RoPE, LRPE or FIRE' if field == 'pos_embed' else 'off'} with "
                            f"mixer={self.mixer!r} (attention only)")
    if "peg" in parts:
      if self.scan:
        bad("scan", True, "False with pos_embed 'peg' (PEG follows some blocks only; scan stacks identical blocks)")
      if not self.peg_blocks or any(b not in range(self.depth) for b in self.peg_blocks) or \
          len(set(self.peg_blocks)) != len(self.peg_blocks):
        bad("peg_blocks", self.peg_blocks, f"distinct block indices in [0, depth={self.depth}), at least one")
    elif tuple(self.peg_blocks) != (0,):
      bad("peg_blocks", self.peg_blocks, "(0,), the default, unless pos_embed has 'peg'")
    if self.reduction and set(parts) & {"lrpe", "fire", "peg"}:
      bad("reduction", self.reduction, f"None with pos_embed={self.pos_embed!r} (reduced tokens lose their grid "
                                       f"positions)")
    if self.mixer in GRID_MIXERS and self.num_prefix_tokens:
      bad("class_token", self.class_token, f"False, with no distillation or register tokens, for "
                                           f"mixer={self.mixer!r} (it mixes over the patch grid)")
    if self.exits:
      if self.num_classes == 0:
        bad("exits", self.exits, "None when num_classes=0 (an exit is a classifier)")
      _, kinds = exits.check_exits(self.exits, self.depth)
      if self.reduction and set(kinds) != {"linear"}:
        bad("exits", self.exits, "linear heads with a token reduction (LGViT's heads read the full patch grid)")
    if rope and self.reduction:
      bad("reduction", self.reduction, "None with a rotary pos_embed (reduced tokens lose their grid positions)")
    if rope and (self.embed_dim // self.num_heads) % 4:
      bad("pos_embed", self.pos_embed, "no RoPE unless the head dim (embed_dim / num_heads) is divisible by 4")
    if self.global_pool not in layers.POOLS:
      bad("global_pool", self.global_pool, layers.POOLS)
    if self.global_pool == "token" and not self.class_token:
      bad("global_pool", "token", "'avg', 'max' or 'avgmax' when class_token=False")
    if self.dist_token and not self.class_token:
      bad("dist_token", True, "False unless class_token=True")
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    if h % self.patch_size or w % self.patch_size:
      bad("img_size", self.img_size, f"multiples of patch_size={self.patch_size}")
    if self.embed_dim % self.num_heads:
      bad("num_heads", self.num_heads, f"divisors of embed_dim={self.embed_dim}")
    for field in ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
      if not 0.0 <= getattr(self, field) < 1.0:
        bad(field, getattr(self, field), "[0, 1)")
    if self.reduction:
      self._reduction_config()

  @property
  def reduction_params(self) -> tuple[str, ...]:
    """Path prefixes of parameters the reduction adds (a pretrained ViT has none: they start from init)."""
    kind = self.reduction.get("kind") if self.reduction else None
    return {"dynamicvit": ("encoder/score_predictor_",), "patch_merger": ("encoder/patch_merger",),
            "tcformer": ("encoder/ctm",)}.get(kind, ())

  def _reduction_config(self) -> Optional[dict]:
    """The encoder's per-block token reduction from `reduction` (`jaxvit.dynamic.reduction`)."""
    return reduction_lib.encoder_reduction(self) if self.reduction else None

  def _add_pos_embed(self, x):
    """Position embedding, then prefix tokens (DeiT-III) or prefix tokens, then embedding (ViT)."""
    prefix = layers.PrefixTokens(self.class_token, self.dist_token, self.reg_tokens, self.param_dtype,
                                 name="tokens")
    if not self.no_embed_class:
      x = prefix(x)
    absolute, _ = self.position_encoding
    if absolute == "learn":
      length = x.shape[1]
      pos = self.param("pos_embed", layers.with_axes(nn.initializers.truncated_normal(0.02),
                                                     (None, "seq", "embed")),
                       (1, length, self.embed_dim), self.param_dtype)
      x = x + pos.astype(x.dtype)
    elif absolute == "sincos":
      pos = layers.sincos_2d(self.grid, self.embed_dim)
      x = x + jnp.asarray(np.concatenate([np.zeros((1, x.shape[1] - pos.shape[1], self.embed_dim),
                                                   np.float32), pos], axis=1), x.dtype)
    return prefix(x) if self.no_embed_class else x

  def _embed_tokens(self, images, train: bool):
    """Patch embedding, prefix tokens and position embedding, dropout: the blocks' input tokens `[B, N, C]`."""
    expected = self.grid[0] * self.patch_size, self.grid[1] * self.patch_size
    if tuple(images.shape[1:3]) != expected:
      raise ValueError(f"input images are {images.shape[1]}x{images.shape[2]} but the model was built "
                       f"with img_size={self.img_size}; create it with img_size={images.shape[1]}")
    x = layers.PatchEmbed(self.embed_dim, self.patch_size, name="patch_embed", dtype=self.dtype,
                          param_dtype=self.param_dtype)(images)
    x = nn.Dropout(self.pos_drop_rate)(self._add_pos_embed(x), deterministic=not train)
    return nn.with_logical_constraint(x, ("batch", "seq", "embed"))

  @nn.compact
  def __call__(self, images, *, train: bool = False, span: Optional[tuple] = None):
    """`(logits, out)`. With `span=(lo, hi)` only blocks lo .. hi - 1 run, on `images` = the tokens block lo
    takes (lo > 0) or on images (lo = 0); before the last block it returns `(exit logits of block hi - 1, out)`
    with the tokens in `out["tokens"]` (the staged early-exit path, `jaxvit.dynamic.exits.StagedEarlyExit`)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    lo, hi = span or (0, self.depth)
    x = self._embed_tokens(images, train) if lo == 0 else images

    _, rope = self.position_encoding
    parts = self.position_parts
    block = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                 init_values=self.init_values, proj_drop_rate=self.proj_drop_rate,
                 attn_drop_rate=self.attn_drop_rate, return_attention=self.return_attention, **kw)
    block.update(grid=self.grid, mixer=self.mixer)
    if rope or "lrpe" in parts:
      theta = layers.DEFAULT_THETA[rope or "axial"] if self.rope_theta is None else self.rope_theta
      block.update(rope=rope, lrpe="lrpe" in parts, rope_theta=theta)
    if "fire" in parts:
      block.update(fire=True)
    peg = tuple(dict(peg=True) if i in self.peg_blocks else {} for i in range(self.depth)) if "peg" in parts else ()
    x, out = Encoder(self.depth, block, self.drop_path_rate, self.scan, self.remat, train, self._reduction_config(),
                     span, block_fields=peg, name="encoder")(x)

    fc_norm = self.global_pool != "token" if self.fc_norm is None else self.fc_norm
    if hi < self.depth:  # a stage of the staged early-exit path ends at the exit after block hi - 1
      out["tokens"] = x
      kind = dict(zip(*exits.check_exits(self.exits, self.depth)))[hi - 1]
      return exits.exit_head(kind, self, name=f"exit_{hi - 1}")(x, **exits.head_inputs(self, train)), out
    norm = layers.layer_norm(name="fc_norm" if fc_norm else "norm", **kw)
    x = x if fc_norm else norm(x)
    out["encoded"] = x
    pooled = layers.pool_tokens(x, self.global_pool, self.num_prefix_tokens)
    pooled = norm(pooled) if fc_norm else pooled
    out["pre_logits"] = pooled
    if self.num_classes == 0:
      return pooled, out
    for b, kind in zip(*exits.check_exits(self.exits, self.depth)) if self.exits and not span else ():
      head = exits.exit_head(kind, self, name=f"exit_{b}")
      if kind == "linear":
        out[f"exit_logits{b}"] = head(out[f"block{b}"], **exits.head_inputs(self, train))
      else:  # LGViT's heads: also their transformed patches, which its second stage distils (lgvit_distill)
        out[f"exit_logits{b}"], out[f"exit_features{b}"] = head(out[f"block{b}"], return_features=True,
                                                                **exits.head_inputs(self, train))

    def head(name, features):
      features = nn.Dropout(self.drop_rate)(features, deterministic=not train)
      return layers.dense(self.num_classes, ("embed", "classes"), name=name, kernel_init=nn.initializers.zeros,
                          **kw)(features)

    logits = head("head", pooled)
    if self.dist_token:
      # DeiT: class and distillation heads; inference averages them (arXiv:2012.12877, sec. 4).
      out["logits_cls"], out["logits_dist"] = logits, head("head_dist", x[:, 1])
      logits = (out["logits_cls"] + out["logits_dist"]) / 2
    out["logits"] = logits
    return logits, out


def _register(name, mean_std=None, **arch):
  """Registers `name` as a `VisionTransformer` with architecture fields `arch`."""
  kw = {} if mean_std is None else dict(mean=mean_std[0], std=mean_std[1])
  register_variant(VisionTransformer, name, **kw, **arch)


_INCEPTION = (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)  # Google's ViT weights use [-1, 1]
_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)

_register("vit_tiny_patch16_224", _INCEPTION, **_TI)
_register("vit_small_patch16_224", _INCEPTION, **_S)
_register("vit_small_patch32_224", _INCEPTION, patch_size=32, **_S)
_register("vit_base_patch16_224", _INCEPTION, **_B)
_register("vit_base_patch16_384", _INCEPTION, img_size=384, **_B)
for size, arch in (("tiny", _TI), ("small", _S), ("base", _B)):
  _register(f"deit_{size}_patch16_224", **arch)
  _register(f"deit_{size}_distilled_patch16_224", dist_token=True, **arch)
_register("deit_base_patch16_384", img_size=384, **_B)
_register("deit_base_distilled_patch16_384", img_size=384, dist_token=True, **_B)
_register("deit3_small_patch16_224", no_embed_class=True, init_values=1e-6, **_S)
_register("deit3_base_patch16_224", no_embed_class=True, init_values=1e-6, **_B)
# RoPE-ViT (naver-ai/rope-vit, in timm's eva.py): DeiT-III-style, LayerScale 1e-5; `_ape` adds a learned embedding
for size, arch in (("small", _S), ("base", _B), ("large", dict(embed_dim=1024, depth=24, num_heads=16))):
  for kind in layers.ROPES:
    suffix = "" if kind == "axial" else f"_{kind}"
    _register(f"vit_{size}_patch16_rope{suffix}_224", pos_embed=f"rope_{kind}", init_values=1e-5, **arch)
    _register(f"vit_{size}_patch16_rope{suffix}_ape_224", pos_embed=f"learn+rope_{kind}", no_embed_class=True,
              init_values=1e-5, **arch)
# CPVT (arXiv:2102.10882): DeiT without its position embedding, a PEG (3x3 depthwise convolution + residual on the
# patch grid, the class token passed through; sec. 3.2) after block 0 (the paper's position 0, Fig. 1b); `_0to5`: a
# PEG after each of blocks 0 ... 5 (the paper's "0-5" (double-dagger) models of its ImageNet comparison, iRPE's
# CPVT-Ti / -S rows); `_gap`: no class token, the patches' global average (CPVT-GAP) with PEGs after blocks 0 ... 5
# as the paper's GAP rows, LayerNorm before the average as the authors' CPVTV2 (`Meituan-AutoML/Twins` gvt.py). No
# CPVT model code was released (Meituan-AutoML/CPVT holds a README; Twins' gvt.py holds the PEG, `PosCNN`): the
# models follow the paper's description.
_ALL_PEGS = tuple(range(6))
for size, arch in (("ti", _TI), ("s", _S), ("b", _B)):
  _register(f"cpvt_{size}_224", pos_embed="peg", **arch)
for size, arch in (("ti", _TI), ("s", _S)):
  _register(f"cpvt_{size}_0to5_224", pos_embed="peg", peg_blocks=_ALL_PEGS, **arch)
  _register(f"cpvt_{size}_gap_224", pos_embed="peg", peg_blocks=_ALL_PEGS, class_token=False, global_pool="avg",
            fc_norm=False, **arch)
