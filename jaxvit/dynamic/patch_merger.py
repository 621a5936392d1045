"""PatchMerger (Renggli et al. 2022, "Learning to Merge Tokens in Vision Transformers", arXiv:2202.12015, sec. 2).

Between two blocks, N tokens X become M: `Y = softmax(W LN(X)^T / sqrt(D)) LN(X)`, W in R^{M x D} learned
queries, the softmax over the N input tokens, so each output is a convex combination of the normed inputs. The
paper writes softmax(W X^T) with no scale; we follow lucidrains' `vit_pytorch/vit_with_patch_merger.py`, the
de-facto reference (no official code), which scales by 1/sqrt(D) and merges the normed tokens. The paper's models
pool by global average with no class token, so the ViT needs class_token=False (no prefix tokens).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import layer_norm, with_axes


class PatchMerger(nn.Module):
  """`[B, N, D] -> [B, M, D]`: `norm`, learned `queries` `[M, D]`, softmax over the tokens (sec. 2)."""
  tokens: int  # M
  norm_eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    x = layer_norm(self.norm_eps, name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
    queries = self.param("queries", with_axes(nn.initializers.normal(1.0), (None, "embed")), (self.tokens, dim),
                         self.param_dtype)
    logits = jnp.einsum("md,bnd->bmn", queries.astype(x.dtype), x).astype(jnp.float32) * dim ** -0.5
    return jnp.einsum("bmn,bnd->bmd", jax.nn.softmax(logits, axis=-1).astype(x.dtype), x)
