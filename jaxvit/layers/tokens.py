"""Prefix tokens: class token (ViT), distillation token (DeiT, arXiv:2012.12877 sec. 4), registers
(Darcet et al. 2023, arXiv:2309.16588)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import with_axes, zeros


class PrefixTokens(nn.Module):
  """Prepends `[cls] [dist] [reg x num_reg]` learned tokens to `[B, N, D]` patch tokens.

  Parameter names follow timm: `cls_token`, `dist_token` `[1, 1, D]`, `reg_token` `[1, R, D]`.
  """
  class_token: bool = True
  dist_token: bool = False
  reg_tokens: int = 0
  param_dtype: jnp.dtype = jnp.float32

  @property
  def num_tokens(self) -> int:
    return int(self.class_token) + int(self.dist_token) + self.reg_tokens

  @nn.compact
  def __call__(self, x):
    b, _, d = x.shape
    init = with_axes(jax.nn.initializers.normal(1e-6), (None, None, "embed"))
    tokens = []
    if self.class_token:
      tokens.append(self.param("cls_token", init, (1, 1, d), self.param_dtype))
    if self.dist_token:
      tokens.append(self.param("dist_token", with_axes(zeros, (None, None, "embed")), (1, 1, d),
                               self.param_dtype))
    if self.reg_tokens:
      tokens.append(self.param("reg_token", init, (1, self.reg_tokens, d), self.param_dtype))
    if not tokens:
      return x
    tokens = [jnp.broadcast_to(t, (b,) + t.shape[1:]).astype(x.dtype) for t in tokens]
    return jnp.concatenate(tokens + [x], axis=1)
