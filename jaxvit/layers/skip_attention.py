"""SkipAt's parametric function Phi (Venkataramanan et al. 2024, "Skip-Attention: Improving Vision Transformers by
Paying Less Attention", arXiv:2301.02240, sec. 3.2, eq. 5): the attention output of an earlier layer, mapped to
the one a skipped MSA would have produced.

Phi is Uformer's LeFF (Wang et al. 2022): FC expansion, GELU, a depthwise conv on the token grid, GELU, FC back,
then ECA channel attention (Wang et al. 2020, ECA-Net, arXiv:1910.03151): a 1-D conv over the channels of the
token-averaged features, sigmoid, and a per-channel rescale. Class tokens do not enter Phi (the caller passes them
on), so it sees only the patch tokens.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.init import dense, trunc_normal_02, with_axes
from jaxvit.layers.mlp import gelu


class EfficientChannelAttention(nn.Module):
  """ECA on tokens `[B, N, C]`: x * sigmoid(conv1d_k(mean_N x)), a bias-free `kernel_size` conv across channels with
  zero padding (`kernel` `[k]`, torch's `Conv1d(1, 1, k)` weight `[1, 1, k]` flattened)."""
  kernel_size: int = 3
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", with_axes(trunc_normal_02, (None,)), (k,), self.param_dtype).astype(self.dtype)
    pooled = jnp.pad(x.mean(axis=1), ((0, 0), ((k - 1) // 2, k // 2)))  # [B, C + k - 1]
    windows = jnp.stack([pooled[:, j:j + x.shape[-1]] for j in range(k)], axis=-1)  # [B, C, k]
    return x * jax.nn.sigmoid(jnp.einsum("bck,k->bc", windows, kernel))[:, None, :]


class SkipAttentionPhi(nn.Module):
  """Phi of SkipAt on patch tokens `[B, h * w, C]` -> `[B, h * w, C]`: `linear1` (C -> `hidden_dim`) + GELU,
  `dwconv` (`kernel_size`, with bias) + GELU on the `grid`, `linear2` back to C, `eca` (the official `LeFF`)."""
  hidden_dim: int
  grid: tuple
  kernel_size: int = 5
  eca_kernel_size: int = 3  # 0: no ECA
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, n, c = x.shape
    h, w = self.grid
    if n != h * w:
      raise ValueError(f"SkipAttentionPhi: {n} tokens do not fill grid={self.grid}")
    x = gelu(dense(self.hidden_dim, ("embed", "mlp"), name="linear1", **kw)(x))
    x = gelu(DepthwiseConv(self.kernel_size, name="dwconv", **kw)(x.reshape(b, h, w, self.hidden_dim)))
    x = dense(c, ("mlp", "embed"), name="linear2", **kw)(x.reshape(b, n, self.hidden_dim))
    return EfficientChannelAttention(self.eca_kernel_size, name="eca", **kw)(x) if self.eca_kernel_size else x
