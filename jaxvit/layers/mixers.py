"""Attention-free token mixers on a flat token sequence `[B, N, C]` (MLP-Mixer, ResMLP, gMLP).

Each mixes information across the N tokens with weights tied to N (so a model using one works only at
the token count it was built for), and each can stand in for self-attention in a pre-norm block:
`x + mixer(norm(x))`. timm's `mlp_mixer.py` is the file followed; parameter names are timm's.
"""

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import dense, ones, trunc_normal_02, with_axes, zeros
from jaxvit.layers.mlp import gelu


class CrossPatchLinear(nn.Module):
  """A linear map across the token axis, shared by all channels: `y[b, m, c] = sum_n x[b, n, c] W[n, m] + b[m]`.

  ResMLP's cross-patch sublayer (Touvron et al. 2021, arXiv:2105.03404, eq. 1: `A^T` acting on the
  patches; timm's `linear_tokens`) is the square case `features=None` (M = N); MLP-Mixer's token-mixing
  MLP and gMLP's spatial gating projection are built from it. `[..., N, C] -> [..., M, C]`.
  """
  features: Optional[int] = None  # output tokens M; None: M = N
  kernel_init: Callable = trunc_normal_02
  bias_init: Callable = zeros
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n = x.shape[-2]
    m = n if self.features is None else self.features
    kernel = self.param("kernel", with_axes(self.kernel_init, ("seq", None)), (n, m), self.param_dtype)
    bias = self.param("bias", with_axes(self.bias_init, (None,)), (m,), self.param_dtype)
    y = jnp.einsum("...nc,nm->...mc", x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)[:, None]


class TokenMixingMlp(nn.Module):
  """MLP-Mixer's token-mixing MLP (Tolstikhin et al. 2021, arXiv:2105.01601, eq. 1:
  `U_{*,i} = X_{*,i} + W_2 sigma(W_1 LayerNorm(X)_{*,i})`, this module being the `W_2 sigma(W_1 .)` part):
  one MLP over the token axis, shared by every channel. `glu=True` is timm's GLU variant (gmixer):
  the hidden tokens split in halves `h1 * act(h2)`. timm's `mlp_tokens` (`fc1`, `fc2`). `[B, N, C] -> [B, N, C]`.
  """
  hidden_dim: int  # D_S in the paper (hidden tokens)
  act: Callable = gelu
  glu: bool = False
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    n = x.shape[-2]
    h = CrossPatchLinear(self.hidden_dim, name="fc1", **kw)(x)  # [B, N, C] -> [B, D_S, C]
    if self.glu:
      h1, h2 = jnp.split(h, 2, axis=-2)
      h = h1 * self.act(h2)
    else:
      h = self.act(h)
    h = nn.Dropout(self.drop_rate)(h, deterministic=not train)
    h = CrossPatchLinear(n, name="fc2", **kw)(h)  # -> [B, N, C]
    return nn.Dropout(self.drop_rate)(h, deterministic=not train)


class Affine(nn.Module):
  """ResMLP's Affine "normalisation" (arXiv:2105.03404, eq. 2: `Aff(x) = alpha * x + beta`, per channel,
  alpha starting at 1 and beta at 0); timm's `Affine` (`alpha`, `beta`). No statistics, so it can be folded
  into the next linear layer after training."""
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    alpha = self.param("alpha", with_axes(ones, ("embed",)), (c,), self.param_dtype)
    beta = self.param("beta", with_axes(zeros, ("embed",)), (c,), self.param_dtype)
    return x.astype(self.dtype) * alpha.astype(self.dtype) + beta.astype(self.dtype)


class SpatialGatingUnit(nn.Module):
  """gMLP's spatial gating unit (Liu et al. 2021, arXiv:2105.08050, eq. 2-3 with the split of sec. 2.1):
  `Z = [Z1, Z2]` split on channels, `s(Z) = Z1 * (W LayerNorm(Z2) + b)` with `W` `[N, N]` across tokens,
  initialised near zero and `b` at one so the unit starts as the identity on `Z1`. timm's
  `SpatialGatingUnit` (`norm`, a torch-default LayerNorm, eps 1e-5; `proj`). `[B, N, 2d] -> [B, N, d]`.
  """
  norm_eps: float = 1e-5
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    u, v = jnp.split(x, 2, axis=-1)
    v = nn.LayerNorm(self.norm_eps, name="norm", scale_init=with_axes(ones, ("mlp",)),
                     bias_init=with_axes(zeros, ("mlp",)), **kw)(v)
    v = CrossPatchLinear(None, jax.nn.initializers.normal(1e-6), ones, name="proj", **kw)(v)
    return u * v


class GatedMlp(nn.Module):
  """gMLP's block body (arXiv:2105.08050, eq. 1: `Y = W_2 s(sigma(W_1 X))`, the norm being the block's):
  fc1 -> GELU -> dropout -> spatial gating unit (halves the width) -> fc2 -> dropout; timm's `GatedMlp`
  with a `SpatialGatingUnit` gate (`fc1`, `gate`, `fc2`). `[B, N, C] -> [B, N, C]`.
  """
  hidden_dim: int  # d_ffn (even)
  act: Callable = gelu
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    c = x.shape[-1]
    h = self.act(dense(self.hidden_dim, ("embed", "mlp"), name="fc1", **kw)(x))
    h = nn.Dropout(self.drop_rate)(h, deterministic=not train)
    h = SpatialGatingUnit(name="gate", **kw)(h)  # [B, N, d_ffn] -> [B, N, d_ffn / 2]
    h = dense(c, ("mlp", "embed"), name="fc2", **kw)(h)
    return nn.Dropout(self.drop_rate)(h, deterministic=not train)
