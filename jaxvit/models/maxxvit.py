"""MaxViT: Multi-Axis Vision Transformer (Tu et al. 2022, arXiv:2204.01697); timm's `maxxvit.py` is the
file followed.

A conv stem (two 3x3 convs, stride 2), then four stages of MaxViT blocks (sec. 3, Fig. 2): an MBConv
(the first of a stage halves the resolution), *block* attention within `P x P` windows and *grid*
attention across a `P x P` grid spread over the whole map (sec. 3.2), each attention with a relative
position bias (eq. 1) and an MLP. `P = img_size / 32` unless `partition_size` is set, so every stage's
map must divide by `P` (a clear error otherwise).

Two families of weights: `maxvit_*_tf_*`, ported from the official TensorFlow code (TF "SAME" padding,
BatchNorm eps 1e-3, tanh-GELU, MaxViT's table bias, a pool -> LayerNorm -> tanh MLP head), and timm's own
`maxvit_*_rw_*` (torch padding, SiLU MBConvs, Swin's table bias or, `rmlp`, an MLP bias, LayerNorm ->
pool head). Parameter and batch-stat names mirror timm's (`stem_conv1`, `stages_0_1/attn_grid/...`).
Returns `(logits, out)`; `out` holds `stage0` ... `stage3` maps `[B, H, W, C]`, `pre_logits` and `logits`.
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.conv import ClassifierHead
from jaxvit.layers.init import dense, layer_norm
from jaxvit.layers.mbconv import ACTS, PADDINGS, bn, conv
from jaxvit.models.maxxvit_blocks import BLOCKS, REL_POS
from jaxvit.registry import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD, register_variant
from jaxvit.utils import check_rates, config_error


def _pair(size):
  return (size, size) if isinstance(size, int) else tuple(size)


class MaxxVit(nn.Module):
  """MaxViT classifier on NHWC images; timm's `MaxxVit` with MaxViT ('M') or timm's parallel ('PM') blocks.
  Defaults: the TF ports."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  embed_dim: Sequence[int] = (64, 128, 256, 512)
  depths: Sequence[int] = (2, 2, 5, 2)
  block_type: str = "M"  # one of BLOCKS: MaxViT's; "PM": timm's parallel block / grid attention
  stem_width: Union[int, Sequence[int]] = 64  # the stem's two convs' widths (one int: both)
  stem_bias: bool = True
  head_hidden_size: Optional[int] = 512  # pool -> LayerNorm -> Linear + tanh head (TF); None: LayerNorm -> pool
  partition_size: Optional[Union[int, Sequence[int]]] = None  # window / grid size P; None: img_size // 32
  # MBConv
  padding: str = "same"  # one of PADDINGS: TF "SAME", or "" (torch's symmetric)
  conv_act: str = "gelu_tanh"
  conv_norm_eps: float = 1e-3
  expand_output: bool = True  # MBConv hidden width from the output width (else the input width)
  output_bias: bool = True
  se_ratio: float = 0.25
  # attention blocks
  dim_head: int = 32
  head_first: bool = False  # qkv output order: [heads, 3, d] (timm's own) or [3, heads, d] (TF)
  transformer_act: str = "gelu_tanh"
  transformer_norm_eps: float = 1e-5
  rel_pos_type: str = "bias_tf"  # one of REL_POS
  rel_pos_dim: int = 512  # hidden width of the "mlp" bias
  init_values: Optional[float] = None  # LayerScale
  drop_rate: float = 0.0  # before the classifier
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_features(self) -> int:
    return self.head_hidden_size or self.embed_dim[-1]

  @property
  def patch_size(self) -> int:
    """The stem's stride: its first conv embeds 2x2 pixels. (Like a ViT's patch size, the input size is
    tied to the architecture here: `img_size` fixes the partition size.)"""
    return 2

  @property
  def partition(self) -> tuple:
    """`(P_h, P_w)`: the block-attention window and the grid-attention grid."""
    if self.partition_size is not None:
      return _pair(self.partition_size)
    return tuple(s // 32 for s in _pair(self.img_size))

  def stage_sizes(self, h: int, w: int) -> list:
    """The `(H, W)` of each stage's output for an `h x w` input; ValueError if one does not fit the partition."""
    ceil2 = lambda n: -(-n // 2)
    size, sizes = (ceil2(h), ceil2(w)), []
    p = self.partition
    for i in range(len(self.depths)):
      if self.padding == "" and (size[0] % 2 or size[1] % 2):
        raise ValueError(f"{type(self).__name__}: stage{i} input {size[0]}x{size[1]} is odd (padding='' pools "
                         f"without padding); accepted: input sizes whose every stage's map is a multiple of {p}")
      size = (ceil2(size[0]), ceil2(size[1]))
      if min(p) < 1 or size[0] % p[0] or size[1] % p[1]:
        raise ValueError(f"{type(self).__name__}: input {h}x{w} gives a stage{i} map of {size[0]}x{size[1]}, not "
                         f"divisible by partition_size={p}; accepted: input sizes whose every stage's map is a "
                         f"multiple of it (e.g. multiples of {32 * p[0]}x{32 * p[1]})")
      sizes.append(size)
    return sizes

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if len(self.depths) != len(self.embed_dim) or min(self.depths) < 1:
      raise config_error(self, "depths", self.depths, f"{len(self.embed_dim)} stage depths >= 1 (one per embed_dim)")
    if any(d % self.dim_head for d in self.embed_dim):
      raise config_error(self, "embed_dim", self.embed_dim, f"multiples of dim_head={self.dim_head}")
    if len(_pair(self.stem_width)) != 2:
      raise config_error(self, "stem_width", self.stem_width, "an int or two widths")
    for field, accepted in (("block_type", tuple(BLOCKS)), ("padding", PADDINGS), ("conv_act", tuple(ACTS)), ("transformer_act", tuple(ACTS)),
                            ("rel_pos_type", tuple(REL_POS))):
      if getattr(self, field) not in accepted:
        raise config_error(self, field, getattr(self, field), accepted)
    try:
      self.stage_sizes(*_pair(self.img_size))
    except ValueError:
      raise config_error(self, "img_size", self.img_size,
                         f"sizes whose stage maps divide by the partition size {self.partition} (img_size // 32 "
                         f"unless partition_size is set), e.g. multiples of 32 * {self.partition[0]}") from None
    check_rates(self, ("drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.stage_sizes(*images.shape[1:3])
    widths = _pair(self.stem_width)
    x = conv(widths[0], 3, 2, padding=self.padding, use_bias=self.stem_bias, name="stem_conv1", **kw)(
        images.astype(self.dtype))
    x = ACTS[self.conv_act](bn(train, self.conv_norm_eps, name="stem_norm1", **kw)(x))
    x = conv(widths[1], 3, 1, padding=self.padding, use_bias=self.stem_bias, name="stem_conv2", **kw)(x)

    conv_kw = dict(act=self.conv_act, norm_eps=self.conv_norm_eps, padding=self.padding,
                   expand_output=self.expand_output, output_bias=self.output_bias, se_ratio=self.se_ratio)
    attn_kw = dict(size=self.partition, dim_head=self.dim_head, head_first=self.head_first,
                   rel_pos_type=self.rel_pos_type, rel_pos_dim=self.rel_pos_dim, act=self.transformer_act,
                   norm_eps=self.transformer_norm_eps, init_values=self.init_values)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    out, index = {}, 0
    for stage, (depth, width) in enumerate(zip(self.depths, self.embed_dim)):
      for i in range(depth):
        x = BLOCKS[self.block_type](width, 2 if i == 0 else 1, conv_kw, attn_kw, train,
                                    name=f"stages_{stage}_{i}", **kw)(x, float(rates[index]))
        index += 1
      x = nn.with_logical_constraint(x, ("batch", None, None, None))
      out[f"stage{stage}"] = x

    if self.head_hidden_size:  # timm's NormMlpClassifierHead: pool, LayerNorm, Linear + tanh
      x = layer_norm(self.transformer_norm_eps, name="head_norm", **kw)(jnp.mean(x, axis=(1, 2)))
      x = jnp.tanh(dense(self.head_hidden_size, ("embed", "mlp"), name="head_pre_logits", **kw)(x))
      x = x[:, None, None, :]
    else:
      x = layer_norm(self.transformer_norm_eps, name="norm", **kw)(x)
    out["pre_logits"], out["logits"] = ClassifierHead(self.num_classes, self.drop_rate, name="head", **kw)(x, train)
    return out["logits"], out


def _register(name, img_size, crop_pct, mean_std=None, **arch):
  """Registers `name` as a `MaxxVit` at `img_size` with timm's default eval crop and normalisation."""
  norm = dict(mean=mean_std[0], std=mean_std[1]) if mean_std else {}
  register_variant(MaxxVit, name, crop_pct=crop_pct, img_size=img_size, **norm, **arch)


_INCEPTION = (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)
# the TensorFlow ports: (embed_dim, depths, stem_width)
_TF = {"tiny": ((64, 128, 256, 512), (2, 2, 5, 2), 64), "small": ((96, 192, 384, 768), (2, 2, 5, 2), 64),
       "base": ((96, 192, 384, 768), (2, 6, 14, 2), 64), "large": ((128, 256, 512, 1024), (2, 6, 14, 2), 128),
       "xlarge": ((192, 384, 768, 1536), (2, 6, 14, 2), 192)}
for _size, (_dims, _depths, _stem) in _TF.items():
  for _res in (224, 384, 512):
    _extra = dict(num_classes=21843) if (_size, _res) == ("xlarge", 224) else {}  # timm's default: in21k weights
    _default_norm = _res == 224 and _size != "xlarge"
    _register(f"maxvit_{_size}_tf_{_res}", _res, 0.95 if _res == 224 else 1.0, None if _default_norm else _INCEPTION,
              embed_dim=_dims, depths=_depths, stem_width=_stem, head_hidden_size=_dims[-1], **_extra)

# timm's own MaxViTs: torch padding, SiLU MBConvs widened from their input, Swin's table bias or an MLP bias
_RW = dict(stem_width=(32, 64), stem_bias=False, head_hidden_size=None, padding="", conv_act="silu",
           conv_norm_eps=1e-5, expand_output=False, output_bias=False, se_ratio=1 / 16, head_first=True,
           transformer_act="gelu", transformer_norm_eps=1e-6, rel_pos_type="bias")
_PICO = dict(embed_dim=(32, 64, 128, 256), depths=(2, 2, 5, 2), stem_width=(24, 32))
_NANO = dict(embed_dim=(64, 128, 256, 512), depths=(1, 2, 3, 1))
_TINY = dict(embed_dim=(64, 128, 256, 512), depths=(2, 2, 5, 2))
_SMALL = dict(embed_dim=(96, 192, 384, 768), depths=(2, 2, 5, 2), init_values=1e-6)
_BASE = dict(embed_dim=(96, 192, 384, 768), depths=(2, 6, 14, 2), head_hidden_size=768)
for _name, _res, _crop, _arch in (
    ("maxvit_pico_rw_256", 256, 0.95, _PICO), ("maxvit_nano_rw_256", 256, 0.95, _NANO),
    ("maxvit_tiny_rw_224", 224, 0.95, _TINY), ("maxvit_tiny_rw_256", 256, 0.95, _TINY),
    ("maxvit_rmlp_pico_rw_256", 256, 0.95, _PICO), ("maxvit_rmlp_nano_rw_256", 256, 0.95, _NANO),
    ("maxvit_rmlp_tiny_rw_256", 256, 0.95, _TINY), ("maxvit_rmlp_small_rw_224", 224, 0.9, _SMALL),
    ("maxvit_rmlp_small_rw_256", 256, 0.95, _SMALL), ("maxvit_rmlp_base_rw_224", 224, 0.95, _BASE),
    ("maxvit_rmlp_base_rw_384", 384, 1.0, _BASE)):
  _register(_name, _res, _crop, _INCEPTION, **{**_RW, **_arch, **(dict(rel_pos_type="mlp") if "rmlp" in _name else {})})
_register("maxvit_tiny_pm_256", 256, 0.95, _INCEPTION, **_RW, **_TINY, block_type="PM")
