"""LGViT's heterogeneous exit heads (Xu et al. 2023, "LGViT: Dynamic Early Exiting for Accelerating Vision
Transformer", arXiv:2308.00255, sec. 3.2): the *local perception head* at shallow exits and the *global
aggregation head* at deep exits. The official `models/deit_highway/highway.py` (falcon-xu/LGViT: the classes
`highway_conv1_1`, `highway_conv2_1`, `GlobalSparseAttn`, `DeiTHighway_v2`) is the file followed; the placement
over exits is `DeiTEncoder.init_highway` of its `modeling_highway_deit.py`.

Both heads read an exit's tokens `[B, N, C]` (prefix tokens, then the `h x w` patch grid), transform the patch
tokens, average them and add the raw class token before a linear classifier: `head(mean(f(patches)) + cls)`.
With a distillation token (the official `backbone='DeiT'`) a second classifier reads `mean(f(patches)) + dist`
and the logits are the average of the two. There is no LayerNorm in either head. `f(patches)` (the official
`hidden_states` each head returns, which LGViT's second-stage feature distillation matches,
`jaxvit.dynamic.lgvit_distill`) is sown as `intermediates/features`, and with `return_features=True` a head returns
`(logits, features)` (the multi-exit ViT's `out["exit_features{i}"]`; computed anyway, it costs nothing).

Initialised as the official `post_init`: conv and linear kernels (the classifiers too, unlike jaxvit's
zero-initialised heads) truncated normal std 0.02, biases zero, BatchNorm scale 1 / bias 0. No dropout: the
official heads have `drop=0` and never apply `DeiTHighway_v2.dropout`. One known difference: Flax's BatchNorm
moves its running variance towards the biased batch variance, torch towards the unbiased one (n / (n - 1),
n = B h w); logits in training and eval mode match the official heads.
`LGVIT_KINDS[n]` is the official head kind of each of n exits (n = 2, 4, 6, 8); LGViT's exits on a 12-block
ViT-B / DeiT-B are 8, after blocks 4..11 (1-based), i.e. jaxvit blocks `LGVIT_BLOCKS = (3, ..., 10)`.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.attention import Attention
from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.init import dense, ones, with_axes, zeros
from jaxvit.layers.mlp import gelu

# The official `init_highway` for highway_type='LGViT' (num_early_exits 2 / 4 / 6 / 8), in jaxvit's kind names:
# "local" = `conv1_1`, "local_1x1" = `conv2_1`, "global_r{k}" = `attention_r{k}`.
LGVIT_KINDS = {
    2: ("local", "global_r2"),
    4: ("local", "local_1x1", "global_r2", "global_r3"),
    6: ("local", "local_1x1", "global_r2", "global_r2", "global_r3", "global_r3"),
    8: ("local", "local", "local_1x1", "local_1x1", "global_r2", "global_r2", "global_r3", "global_r3"),
}
LGVIT_BLOCKS = (3, 4, 5, 6, 7, 8, 9, 10)  # the README's exits [4, ..., 11] (1-based) on a 12-block backbone


def _batch_norm(train: bool, axis_name: str, name: str, dtype, param_dtype):
  """torch's `BatchNorm2d(eps=1e-5)` (momentum 0.1) over the channel axis: batch statistics when training,
  `batch_stats` running averages at eval."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, name=name, scale_init=with_axes(ones, (axis_name,)),
                      bias_init=with_axes(zeros, (axis_name,)))


def _split(tokens, grid, num_prefix_tokens: int, class_token: bool, dist_token: bool, owner: str):
  """`(prefix [B, P, C], patches [B, h * w, C])` after checking the token count and the prefix tokens."""
  h, w = grid
  if tokens.ndim != 3 or tokens.shape[1] != num_prefix_tokens + h * w:
    raise ValueError(f"{owner}: tokens {tokens.shape} are not [B, num_prefix_tokens + h * w, C] for "
                     f"num_prefix_tokens={num_prefix_tokens}, grid={tuple(grid)}")
  if int(class_token) + int(dist_token) > num_prefix_tokens or (dist_token and not class_token):
    raise ValueError(f"{owner}: class_token={class_token}, dist_token={dist_token} need that many prefix tokens "
                     f"(class first, distillation second); got num_prefix_tokens={num_prefix_tokens}")
  return tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]


def _classify(module, pooled, prefix):
  """The official `DeiTHighway_v2` classifier: `head(pooled + cls)`; with a distillation token the average of
  `head(pooled + cls)` and `head_dist(pooled + dist)`; with no class token `head(pooled)`."""
  kw = dict(dtype=module.dtype, param_dtype=module.param_dtype)
  head = lambda name, x: dense(module.num_classes, ("embed", "classes"), name=name, **kw)(x)
  if not module.class_token:
    return head("head", pooled)
  logits = head("head", pooled + prefix[:, 0].astype(pooled.dtype))
  if module.dist_token:
    logits = (logits + head("head_dist", pooled + prefix[:, 1].astype(pooled.dtype))) / 2
  return logits


class LocalPerceptionHead(nn.Module):
  """LGViT's local perception head: a convolutional residual branch on the patch grid, then the classifier.

  Official `highway_conv1_1` (`depthwise=True`, kind "local"): 1x1 conv (C -> C, bias) -> GELU -> BN ->
  3x3 depthwise conv (bias) -> GELU -> BN -> 1x1 conv (C -> C, bias) -> BN, plus the input patches;
  `highway_conv2_1` (`depthwise=False`, kind "local_1x1", the deeper local exits) drops the depthwise step.
  Then `DeiTHighway_v2`: average over the patches, add the class token, linear classifier (see the module
  docstring). 1x1 convs are `Dense` layers on the tokens (`conv1`, `conv2`); the depthwise kernel (`proj`) is
  `[3, 3, 1, C]` + bias (`jaxvit.layers.depthwise_conv`: shifted multiply-adds, torch's `[C, 1, 3, 3]` transposed);
  BatchNorms `bn1`, `proj_bn`, `bn2` keep `batch_stats`.
  """
  num_classes: int
  depthwise: bool = True
  class_token: bool = True
  dist_token: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, grid, num_prefix_tokens: int, train: bool = False, return_features: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    prefix, x = _split(tokens, grid, num_prefix_tokens, self.class_token, self.dist_token, type(self).__name__)
    b, n, c = x.shape
    x = x.astype(self.dtype)
    y = dense(c, ("embed", "mlp"), name="conv1", **kw)(x)
    y = _batch_norm(train, "mlp", "bn1", **kw)(gelu(y))
    if self.depthwise:
      y = DepthwiseConv(3, name="proj", **kw)(y.reshape(b, *grid, c)).reshape(b, n, c)
      y = _batch_norm(train, "mlp", "proj_bn", **kw)(gelu(y))
    y = dense(c, ("mlp", "embed"), name="conv2", **kw)(y)
    features = _batch_norm(train, "embed", "bn2", **kw)(y) + x
    self.sow("intermediates", "features", features)
    logits = _classify(self, features.mean(axis=1), prefix)
    return (logits, features) if return_features else logits


class GlobalAggregationHead(nn.Module):
  """LGViT's global aggregation head: self-attention over a strided subsample of the patch grid, then the
  classifier.

  Official `GlobalSparseAttn(dim=C, sr_ratio=k)` (kind "global_r{k}"): the patch grid is subsampled with
  `AvgPool2d(kernel 1, stride k)` (every k-th row and column from the first: `ceil(h / k) x ceil(w / k)`
  tokens), then multi-head self-attention with 8 heads, no qkv bias, scale head_dim^-1/2, `proj` with bias,
  no residual and no norm. Then `DeiTHighway_v2`: average over the attended tokens, add the class token,
  linear classifier. The attention is jaxvit's `Attention` (`attn/qkv` `[C, 3, heads, head_dim]`,
  `attn/proj` `[heads, head_dim, C]`), timm's `qkv` / `proj` layouts.
  """
  num_classes: int
  sr_ratio: int = 2
  num_heads: int = 8
  qkv_bias: bool = False
  class_token: bool = True
  dist_token: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, *, grid, num_prefix_tokens: int, train: bool = False, return_features: bool = False):
    prefix, x = _split(tokens, grid, num_prefix_tokens, self.class_token, self.dist_token, type(self).__name__)
    if self.sr_ratio < 1:
      raise ValueError(f"{type(self).__name__}: sr_ratio={self.sr_ratio}; accepted: an integer >= 1")
    b, _, c = x.shape
    r = self.sr_ratio
    x = x.reshape(b, *grid, c)[:, ::r, ::r].reshape(b, -1, c).astype(self.dtype)
    features, _ = Attention(self.num_heads, qkv_bias=self.qkv_bias, name="attn", dtype=self.dtype,
                            param_dtype=self.param_dtype)(x, train=train)
    self.sow("intermediates", "features", features)
    logits = _classify(self, features.mean(axis=1), prefix)
    return (logits, features) if return_features else logits


def exit_head(kind: str, num_classes: int, *, class_token: bool = True, dist_token: bool = False,
              dtype=jnp.float32, param_dtype=jnp.float32, name: Optional[str] = None) -> nn.Module:
  """The head of one kind: "local" (`conv1_1`), "local_1x1" (`conv2_1`) or "global_r{k}" (`attention_r{k}`)."""
  kw = dict(class_token=class_token, dist_token=dist_token, dtype=dtype, param_dtype=param_dtype, name=name)
  if kind in ("local", "local_1x1"):
    return LocalPerceptionHead(num_classes, depthwise=kind == "local", **kw)
  if kind.startswith("global_r") and kind[len("global_r"):].isdigit() and int(kind[len("global_r"):]) >= 1:
    return GlobalAggregationHead(num_classes, sr_ratio=int(kind[len("global_r"):]), **kw)
  raise ValueError(f"LGViT exit head kind={kind!r}; accepted: 'local', 'local_1x1', 'global_r<k>' (k >= 1)")
