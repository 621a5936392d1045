"""All-MLP classifiers: MLP-Mixer (Tolstikhin et al. 2021, arXiv:2105.01601), ResMLP (Touvron et al. 2021,
arXiv:2105.03404), gMLP (Liu et al. 2021, arXiv:2105.08050) and timm's GLU-Mixer (`gmixer`); timm's
`mlp_mixer.py` is the file followed.

One `MlpMixer` Module: a linear patch embedding (`stem`), `depth` residual blocks whose token mixing
(`jaxvit.layers.mixers`) has weights sized by the token count, a final norm, average pooling and a linear
head. The token count is fixed by `img_size` / `patch_size`: an image of another size is an error that
says which `img_size` to build the model with. Parameter names mirror timm's so weights convert one to
one (`jaxvit.convert`). Returns `(logits, out)`; `out` holds `block{i}` tokens `[B, N, C]`, `encoded`
(after the final norm), `pre_logits` `[B, embed_dim]` and `logits`.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.drop import drop_path
from jaxvit.layers.glu_mlp import GluMlp
from jaxvit.layers.init import dense, layer_norm, with_axes
from jaxvit.layers.mixers import Affine, CrossPatchLinear, GatedMlp, TokenMixingMlp
from jaxvit.layers.mlp import Mlp, gelu
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.registry import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD, register_variant
from jaxvit.utils import check_rates, config_error

BLOCKS = ("mixer", "resmlp", "gmlp")
ACTS = {"gelu": gelu, "silu": jax.nn.silu}


class Block(nn.Module):
  """One residual block, by `kind`:

  - `mixer` (MLP-Mixer, eq. 1): `x + MLP_tokens(LN(x))`, then `x + MLP_channels(LN(x))`; with `glu` both
    MLPs are GLUs (timm's gmixer);
  - `resmlp` (ResMLP, eq. 1-2): `x + ls1 * A(Aff(x))` with `A` the cross-patch linear, then
    `x + ls2 * MLP(Aff(x))`; `ls1`, `ls2` are the per-channel LayerScale `diag(alpha)` of CaiT;
  - `gmlp` (gMLP, eq. 1): `x + W_2 s(GELU(W_1 LN(x)))` with `s` the spatial gating unit.

  Stochastic depth drops each residual branch (timm's `drop_path`).
  """
  kind: str
  mlp_ratio: float
  token_mlp_ratio: float = 0.5
  glu: bool = False
  act: str = "gelu"
  layer_scale_init: float = 1e-4
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim, act = x.shape[-1], ACTS[self.act]
    hidden = int(dim * self.mlp_ratio)

    def residual(x, y):
      return x + drop_path(self, y, self.drop_path_rate, train=self.train)

    if self.kind == "gmlp":
      y = GatedMlp(hidden, act, self.drop_rate, name="mlp_channels", **kw)(layer_norm(name="norm", **kw)(x),
                                                                          train=self.train)
      return residual(x, y)
    if self.kind == "resmlp":
      init = with_axes(lambda k, s, d: jnp.full(s, self.layer_scale_init, d), ("embed",))
      ls = lambda name: self.param(name, init, (dim,), self.param_dtype).astype(self.dtype)
      y = CrossPatchLinear(name="linear_tokens", **kw)(Affine(name="norm1", **kw)(x))
      x = residual(x, ls("ls1") * y)
      y = Mlp(hidden, act, self.drop_rate, name="mlp_channels", **kw)(Affine(name="norm2", **kw)(x), train=self.train)
      return residual(x, ls("ls2") * y)
    y = TokenMixingMlp(int(dim * self.token_mlp_ratio), act, self.glu, self.drop_rate, name="mlp_tokens", **kw)(
        layer_norm(name="norm1", **kw)(x), train=self.train)
    x = residual(x, y)
    channel_mlp = GluMlp if self.glu else Mlp
    y = channel_mlp(hidden, act, self.drop_rate, name="mlp_channels", **kw)(layer_norm(name="norm2", **kw)(x),
                                                                             train=self.train)
    return residual(x, y)


class MlpMixer(nn.Module):
  """MLP-Mixer / ResMLP / gMLP / GLU-Mixer classifier on NHWC images; timm's `MlpMixer`.

  As timm, every block has the same stochastic-depth rate `drop_path_rate` (no linear rule).
  """
  num_classes: int = 1000
  img_size: Union[int, Sequence[int]] = 224  # the only input size: token mixing is sized by its patch grid
  in_chans: int = 3
  patch_size: int = 16
  embed_dim: int = 512
  depth: int = 8  # timm's num_blocks
  block: str = "mixer"  # one of BLOCKS
  mlp_ratio: float = 4.0  # channel MLP width / embed_dim (gMLP: d_ffn / embed_dim)
  token_mlp_ratio: float = 0.5  # mixer: token-mixing MLP width D_S / embed_dim (timm's mlp_ratio[0])
  glu: bool = False  # mixer: GLU token and channel MLPs (timm's gmixer, with act="silu")
  act: str = "gelu"  # one of ACTS
  layer_scale_init: float = 1e-4  # resmlp: LayerScale init (ResMLP-24: 1e-5; -36, -B-24: 1e-6)
  drop_rate: float = 0.0  # before the head
  proj_drop_rate: float = 0.0  # inside the MLPs
  drop_path_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def grid(self) -> tuple[int, int]:
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    return h // self.patch_size, w // self.patch_size

  @property
  def num_features(self) -> int:
    return self.embed_dim

  def validate(self):
    """Raises a ValueError naming the field for an inconsistent configuration."""
    if self.block not in BLOCKS:
      raise config_error(self, "block", self.block, BLOCKS)
    if self.act not in ACTS:
      raise config_error(self, "act", self.act, tuple(ACTS))
    h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
    if h % self.patch_size or w % self.patch_size or h < self.patch_size or w < self.patch_size:
      raise config_error(self, "img_size", self.img_size, f"positive multiples of patch_size={self.patch_size}")
    if self.glu and self.block != "mixer":
      raise config_error(self, "glu", self.glu, "False unless block='mixer'")
    hidden = int(self.embed_dim * self.mlp_ratio)
    if (self.glu or self.block == "gmlp") and hidden % 2:
      raise config_error(self, "mlp_ratio", self.mlp_ratio, f"a ratio giving an even hidden width (got {hidden})")
    if self.glu and int(self.embed_dim * self.token_mlp_ratio) % 2:
      raise config_error(self, "token_mlp_ratio", self.token_mlp_ratio, "a ratio giving an even token-mixing width")
    check_rates(self, ("drop_rate", "proj_drop_rate", "drop_path_rate"))

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    expected = self.grid[0] * self.patch_size, self.grid[1] * self.patch_size
    if tuple(images.shape[1:3]) != expected:
      raise config_error(self, "img_size", self.img_size,
                         f"the input size only (token mixing is built for {self.grid[0]}x{self.grid[1]} patches); "
                         f"for {images.shape[1]}x{images.shape[2]} images create the model with "
                         f"img_size={tuple(images.shape[1:3])}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = PatchEmbed(self.embed_dim, self.patch_size, name="stem", **kw)(images)  # [B, N, C]
    x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
    block = dict(kind=self.block, mlp_ratio=self.mlp_ratio, token_mlp_ratio=self.token_mlp_ratio, glu=self.glu,
                 act=self.act, layer_scale_init=self.layer_scale_init, drop_rate=self.proj_drop_rate,
                 drop_path_rate=self.drop_path_rate, train=train, **kw)
    out = {}
    for i in range(self.depth):
      x = Block(name=f"blocks_{i}", **block)(x)
      x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
      out[f"block{i}"] = x
    norm = Affine(name="norm", **kw) if self.block == "resmlp" else layer_norm(name="norm", **kw)
    out["encoded"] = x = norm(x)
    out["pre_logits"] = pooled = x.mean(axis=1)
    if self.num_classes == 0:
      out["logits"] = pooled
      return pooled, out
    pooled = nn.Dropout(self.drop_rate)(pooled, deterministic=not train)
    out["logits"] = dense(self.num_classes, ("embed", "classes"), name="head", kernel_init=nn.initializers.zeros,
                          **kw)(pooled)
    return out["logits"], out


def _register(name, mean_std=None, **arch):
  """Registers `name` as an `MlpMixer` with architecture fields `arch` (all at 224 px, crop 0.875)."""
  kw = {} if mean_std is None else dict(mean=mean_std[0], std=mean_std[1])
  register_variant(MlpMixer, name, crop_pct=0.875, **kw, **arch)


_INCEPTION = (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)  # Google's Mixer weights and timm's gMLP use [-1, 1]
for size, (dim, depth) in dict(s=(512, 8), b=(768, 12), l=(1024, 24)).items():
  for patch in (32, 16):
    _register(f"mixer_{size}{patch}_224", _INCEPTION, patch_size=patch, embed_dim=dim, depth=depth)
for depth in (12, 24):  # GLU-Mixer: timm's own experiment (SwiGLU MLPs in MLP-Mixer)
  _register(f"gmixer_{depth}_224", embed_dim=384, depth=depth, token_mlp_ratio=1.0, glu=True, act="silu")
for name, patch, dim, depth, ls in (("12", 16, 384, 12, 1e-4), ("24", 16, 384, 24, 1e-5), ("36", 16, 384, 36, 1e-6),
                                    ("big_24", 8, 768, 24, 1e-6)):
  _register(f"resmlp_{name}_224", patch_size=patch, embed_dim=dim, depth=depth, block="resmlp", layer_scale_init=ls)
for size, dim in dict(ti=128, s=256, b=512).items():
  _register(f"gmlp_{size}16_224", _INCEPTION, embed_dim=dim, depth=30, block="gmlp", mlp_ratio=6.0)
