"""T2T-ViT, Tokens-to-Token ViT (Yuan et al. 2021, arXiv:2101.11986).

A tokens-to-token module (`jaxvit.layers.tokens_to_token`, sec. 3.1: soft split, then twice a small
Performer or transformer layer and a soft split) turns the image into H/16 x W/16 tokens; a class token and
a fixed sinusoidal position embedding are added, and a deep-narrow ViT backbone (sec. 3.2; pre-norm blocks
without qkv bias) classifies from the class token. The official `yitu-opensource/T2T-ViT` `models/t2t_vit.py`
is the file followed (timm has no T2T-ViT); parameter names mirror its modules.

Frozen tensors: the sinusoidal `pos_embed` and the Performer's random features (official `w`) are
`nn.Parameter(requires_grad=False)` in the official code, counted by `sum(p.numel() for p in
model.parameters())`. Here they are in `params` too (same count) with their gradient stopped in the forward
pass, and `jaxvit.train.optim` exempts both from weight decay, so training never changes them.

The official pretrained checkpoints were trained with qk_scale = embed_dim^-1/2 instead of head_dim^-1/2;
loading them needs the q part of each block's `qkv` kernel multiplied by sqrt(head_dim / embed_dim).

Returns `(logits, out)`; `out` holds `t2t_tokens` (the T2T module's output), `block{i}`, `encoded`,
`pre_logits`, `logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.layers.init import dense, layer_norm, trunc_normal_02, with_axes
from jaxvit.layers.tokens_to_token import NORM_EPS, TOKENS_TYPES, T2TModule
from jaxvit.models.vit import Encoder
from jaxvit.registry import register_variant
from jaxvit.utils import check_rates, config_error

REDUCTION = 16  # the soft splits' strides 4 x 2 x 2


def sinusoid_table(n_position: int, dim: int) -> np.ndarray:
  """The transformer's sinusoidal position encoding (Vaswani et al. 2017, sec. 3.5), `[1, n_position, dim]`:
  sin on even channels, cos on odd, frequency 10000^(-2 floor(j / 2) / dim); the official
  `get_sinusoid_encoding`."""
  pos = np.arange(n_position, dtype=np.float64)[:, None]
  angle = pos / np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None]
  table = np.where(np.arange(dim) % 2 == 0, np.sin(angle), np.cos(angle))
  return table[None].astype(np.float32)


class T2TViT(nn.Module):
  """T2T-ViT classifier on NHWC images, the official `T2T_ViT`."""
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224
  in_chans: int = 3
  tokens_type: str = "performer"  # T2T layers: "performer" (T2T-ViT-n) or "transformer" (T2T-ViT_t-n)
  token_dim: int = 64
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = False
  drop_rate: float = 0.0  # the official `drop_rate`: after the position embedding and in every block (no head dropout)
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  t2t_drop_rate: float = 0.1  # the Performer T2T layers' dropouts, fixed at 0.1 in the official code
  scan: bool = False
  remat: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def grid(self) -> tuple[int, int]:
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    return h // REDUCTION, w // REDUCTION

  @property
  def patch_size(self) -> int:
    """Input pixels per token side: the soft splits' strides 4 x 2 x 2."""
    return REDUCTION

  @property
  def num_features(self) -> int:
    """Width of `out["pre_logits"]`."""
    return self.embed_dim

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if self.tokens_type not in TOKENS_TYPES:
      raise config_error(self, "tokens_type", self.tokens_type, TOKENS_TYPES)
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    if h % REDUCTION or w % REDUCTION or not h or not w:
      raise config_error(self, "img_size", self.img_size, f"positive multiples of {REDUCTION} (the soft splits' "
                                                          f"strides 4 x 2 x 2)")
    if self.embed_dim % self.num_heads:
      raise config_error(self, "num_heads", self.num_heads, f"divisors of embed_dim={self.embed_dim}")
    check_rates(self, ("drop_rate", "attn_drop_rate", "drop_path_rate", "t2t_drop_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    self.validate()
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    gh, gw = self.grid
    if tuple(images.shape[1:3]) != (gh * REDUCTION, gw * REDUCTION):
      raise ValueError(f"input images are {images.shape[1]}x{images.shape[2]} but the model was built "
                       f"with img_size={self.img_size}; create it with img_size={images.shape[1]}")
    out = {}
    x = out["t2t_tokens"] = T2TModule(self.embed_dim, self.tokens_type, self.token_dim, self.t2t_drop_rate,
                                      name="tokens_to_token", **kw)(images, train=train)  # [B, N, D]
    b, n, d = x.shape
    cls = self.param("cls_token", with_axes(trunc_normal_02, (None, None, "embed")), (1, 1, d), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
    table = sinusoid_table(n + 1, d)
    pos = self.param("pos_embed", with_axes(lambda *_: jnp.asarray(table, self.param_dtype), (None, "seq", "embed")),
                     table.shape)
    x = x + jax.lax.stop_gradient(pos).astype(x.dtype)  # frozen, as the official requires_grad=False
    x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
    x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))

    block = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                 proj_drop_rate=self.drop_rate, attn_drop_rate=self.attn_drop_rate, norm_eps=NORM_EPS, **kw)
    x, blocks = Encoder(self.depth, block, self.drop_path_rate, self.scan, self.remat, train, name="encoder")(x)
    out.update(blocks)
    x = out["encoded"] = layer_norm(NORM_EPS, name="norm", **kw)(x)
    pooled = out["pre_logits"] = x[:, 0]
    if self.num_classes == 0:
      out["logits"] = pooled
      return pooled, out
    logits = out["logits"] = dense(self.num_classes, ("embed", "classes"), name="head",
                                   kernel_init=nn.initializers.zeros, **kw)(pooled)
    return logits, out


def _register(name, **arch):
  """Registers `name` as a `T2TViT` with architecture fields `arch` (official crop 0.9, ImageNet mean / std)."""
  register_variant(T2TViT, name, crop_pct=0.9, **arch)


# the official t2t_vit.py's variants; "_t_": transformer T2T layers, the others Performer ones
_register("t2t_vit_7", embed_dim=256, depth=7, num_heads=4, mlp_ratio=2.0)
_register("t2t_vit_10", embed_dim=256, depth=10, num_heads=4, mlp_ratio=2.0)
_register("t2t_vit_12", embed_dim=256, depth=12, num_heads=4, mlp_ratio=2.0)
_register("t2t_vit_14", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0)
_register("t2t_vit_19", embed_dim=448, depth=19, num_heads=7, mlp_ratio=3.0)
_register("t2t_vit_24", embed_dim=512, depth=24, num_heads=8, mlp_ratio=3.0)
_register("t2t_vit_t_14", tokens_type="transformer", embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0)
_register("t2t_vit_t_19", tokens_type="transformer", embed_dim=448, depth=19, num_heads=7, mlp_ratio=3.0)
_register("t2t_vit_t_24", tokens_type="transformer", embed_dim=512, depth=24, num_heads=8, mlp_ratio=3.0)
_register("t2t_vit_14_resnext", embed_dim=384, depth=14, num_heads=32, mlp_ratio=3.0)  # 12-wide heads
_register("t2t_vit_14_wide", embed_dim=768, depth=4, num_heads=12, mlp_ratio=3.0)  # the official depth is 4
