"""Tokens-to-Token (T2T) module of T2T-ViT (Yuan et al. 2021, arXiv:2101.11986, sec. 3.1, eq. 1-3).

Each T2T step *re-structurizes* the token sequence with a small transformer, T' = MLP(MSA(T)) (eq. 1),
reshapes it back to an image, I = Reshape(T') (eq. 2), and *soft-splits* that image into overlapping
patches, each patch's k x k x C values concatenated into one token (eq. 3): neighbouring tokens merge and the
sequence shortens by the stride squared. The official `yitu-opensource/T2T-ViT` (`models/t2t_vit.py`,
`token_transformer.py`, `token_performer.py`) is the code followed: names mirror its modules.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import dense, layer_norm, with_axes
from jaxvit.layers.linear_attention import favor_attention, positive_features
from jaxvit.layers.mlp import Mlp

NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which T2T-ViT uses
TOKENS_TYPES = ("performer", "transformer")
# the official soft splits (kernel, stride, padding): 7x7/4, then two 3x3/2: 16x fewer tokens per side
SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))


def soft_split(x, kernel_size: int, stride: int, padding: int):
  """The soft split (eq. 3), torch's `nn.Unfold` on NHWC: `[B, H, W, C] -> [B, h, w, C * k * k]`.

  Output channel `c * k * k + a * k + e` holds input channel c at window offset (a, e), torch's order, with
  zeros outside the image; h = (H + 2 p - k) // s + 1 (likewise w). One static strided slice per window
  offset (k^2 copies, no gather, no convolution, so it costs no MACs, as fvcore counts `nn.Unfold`)."""
  b, hh, ww, c = x.shape
  k, s = kernel_size, stride
  h, w = (hh + 2 * padding - k) // s + 1, (ww + 2 * padding - k) // s + 1
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  windows = [jax.lax.slice(x, (0, a, e, 0), (b, a + s * (h - 1) + 1, e + s * (w - 1) + 1, c), (1, s, s, 1))
             for a in range(k) for e in range(k)]
  return jnp.stack(windows, axis=-1).reshape(b, h, w, c * k * k)  # [B, h, w, C, k*k] -> channel-major


class TokenTransformer(nn.Module):
  """The T2T transformer layer (eq. 1), official `Token_transformer`: one-head attention that also narrows
  the tokens from `dim` (their soft-split width) to `in_dim`, with the values as the shortcut (the input is
  wider than the output), then x + MLP(LN(x)). The logits are scaled by dim^-1/2, the input width, as the
  official code does. No dropout (the official T2T module builds it with rate 0)."""
  in_dim: int
  mlp_ratio: float = 1.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    dim = x.shape[-1]
    x = layer_norm(NORM_EPS, name="norm1", **kw)(x)
    qkv = dense(3 * self.in_dim, ("embed", "mlp"), use_bias=False, name="qkv", **kw)(x)
    q, k, v = jnp.split(qkv, 3, axis=-1)  # 3 x [B, N, in_dim]
    logits = jnp.einsum("bqd,bkd->bqk", q * jnp.asarray(dim ** -0.5, q.dtype), k)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    y = dense(self.in_dim, ("mlp", "embed"), name="proj", **kw)(jnp.einsum("bqk,bkd->bqd", attn, v))
    x = v + y  # `attn` in the official code: the value shortcut
    y = Mlp(int(self.in_dim * self.mlp_ratio), name="mlp", **kw)(layer_norm(NORM_EPS, name="norm2", **kw)(x),
                                                                 train=train)
    return x + y


class TokenPerformer(nn.Module):
  """The T2T layer with Performer attention (Choromanski et al. 2020, arXiv:2009.14794, FAVOR+ with positive
  random features), official `Token_performer`: one head, `in_dim` wide, value shortcut like `TokenTransformer`.

  softmax(q k^T) v is approximated by phi(q) (phi(k)^T v) / (phi(q) sum_t phi(k_t) + 1e-8), linear in the
  token count, with phi(x) = exp(w x - |x|^2 / 2) / sqrt(m), m = `kernel_ratio` * `in_dim` random features
  (`jaxvit.layers.linear_attention`; no 1/sqrt(d) scaling and no stabiliser, as in the official code). The
  features `random_features` (official `w`, `[m, in_dim]`: orthogonal rows times sqrt(m)) are drawn once at init
  from the `params` rng and never trained: they live in `params` (so the parameter count matches the official
  `nn.Parameter(requires_grad=False)`), and the forward pass stops their gradient. The official dropouts are
  fixed at 0.1 (`drop_rate`).
  """
  in_dim: int
  kernel_ratio: float = 0.5
  drop_rate: float = 0.1
  epsilon: float = 1e-8
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    emb, m = self.in_dim, int(self.in_dim * self.kernel_ratio)
    w_init = lambda key, shape, dtype: nn.initializers.orthogonal()(key, shape, jnp.float32).astype(dtype) \
        * jnp.asarray(math.sqrt(shape[0]), dtype)
    w = jax.lax.stop_gradient(self.param("random_features", with_axes(w_init, (None, "embed")), (m, emb),
                                         self.param_dtype))
    x = layer_norm(NORM_EPS, name="norm1", **kw)(x)
    k, q, v = jnp.split(dense(3 * emb, ("embed", "mlp"), name="kqv", **kw)(x), 3, axis=-1)  # the official order
    y = favor_attention(positive_features(q, w), positive_features(k, w), v, self.epsilon).astype(v.dtype)
    y = dense(emb, ("mlp", "embed"), name="proj", **kw)(y)
    x = v + nn.Dropout(self.drop_rate)(y, deterministic=not train)
    y = Mlp(emb, name="mlp", **kw)(layer_norm(NORM_EPS, name="norm2", **kw)(x), train=train)
    return x + nn.Dropout(self.drop_rate)(y, deterministic=not train)


class T2TModule(nn.Module):
  """The tokens-to-token module, official `T2T_module`: soft split (7x7/4), then twice re-structurize
  (`attention1`, `attention2`: a `TokenPerformer` or `TokenTransformer` narrowing to `token_dim`) and soft
  split (3x3/2), then `project` to `embed_dim`. `[B, H, W, C] -> [B, H/16 * W/16, embed_dim]` (H, W multiples
  of 16)."""
  embed_dim: int
  tokens_type: str = "performer"
  token_dim: int = 64
  drop_rate: float = 0.1  # the Performer layers' dropouts (the transformer layers have none)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.tokens_type not in TOKENS_TYPES:
      raise ValueError(f"T2TModule: tokens_type={self.tokens_type!r}; accepted: {TOKENS_TYPES}")
    layer = (lambda i: TokenPerformer(self.token_dim, drop_rate=self.drop_rate, name=f"attention{i}", **kw)) \
        if self.tokens_type == "performer" else (lambda i: TokenTransformer(self.token_dim, name=f"attention{i}", **kw))
    x = soft_split(x.astype(self.dtype), *SOFT_SPLITS[0])  # [B, H/4, W/4, C * 49]
    for i in (1, 2):
      b, h, w, c = x.shape
      x = layer(i)(x.reshape(b, h * w, c), train=train).reshape(b, h, w, self.token_dim)  # eq. 1-2
      x = soft_split(x, *SOFT_SPLITS[i])  # eq. 3: [B, h/2, w/2, token_dim * 9]
    b, h, w, c = x.shape
    return dense(self.embed_dim, ("mlp", "embed"), name="project", **kw)(x.reshape(b, h * w, c))
