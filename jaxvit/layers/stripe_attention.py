"""Cross-shaped window self-attention with locally-enhanced positional encoding (CSWin Transformer: Dong et al. 2022,
arXiv:2107.00652, sec. 3.2-3.3); the official `microsoft/CSWin-Transformer` `models/cswin.py` (`CSWinBlock`'s
attention, `LePEAttention`) is the file followed.

Eq. 1: the map is cut into stripes of width `sw` (`split_size`); every head attends only inside its stripe,
Y^i_k = Attention(X^i W^Q_k, X^i W^K_k, X^i W^V_k), and H-Attention_k(X) = [Y^1_k, ..., Y^M_k] (horizontal stripes
`sw x W`; V-Attention likewise on vertical stripes `H x sw`). Eq. 2: CSWin-Attention(X) = Concat(head_1, ...,
head_K) W^O, half of the heads in one orientation and half in the other, so each token sees a cross-shaped window.
Eq. 3 (LePE): Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d)) V + E V, E a 3 x 3 depthwise convolution of V
(`get_v`), applied inside each stripe (zero padding at stripe borders, as the official code convolves each window).
As the official code, the first half of the channels (heads) takes the vertical stripes (`H x sw`, its `idx=0`) and
the second half the horizontal ones; with `full` (the official `last_stage`) one branch attends over the whole map.
A stripe as wide as the map is global attention, so the official switch to one branch when `split_size` equals the
resolution computes the same function (its one `get_v` is the two halves here).
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.depthwise_conv import DepthwiseConv
from jaxvit.layers.init import Projection
from jaxvit.layers.partition import window_partition, window_reverse
from jaxvit.layers.sr_attention import attend


def stripe_windows(hw, split_size: int, full: bool = False) -> tuple:
  """The windows `(h, w)` of each branch on an `hw = (H, W)` map: `((H, W),)` with `full`, else the vertical stripes
  `(H, sw)` and the horizontal ones `(sw, W)`. Raises a ValueError naming `split_size` unless `sw` divides H and W."""
  h, w = hw
  if full:
    return ((h, w),)
  if split_size < 1 or h % split_size or w % split_size:
    raise ValueError(f"cross-shaped window attention: a {h}x{w} token map is not a multiple of split_size={split_size};"
                     f" accepted: input sizes whose every stage's map (but the last, full-attention stage) is a "
                     f"multiple of that stage's split_size")
  return ((h, split_size), (split_size, w))


class LePEAttention(nn.Module):
  """One branch: multi-head attention inside `window`-shaped stripes (eq. 1) plus LePE (eq. 3, `get_v`); the official
  `LePEAttention`. `q`, `k`, `v` are `[B, H, W, heads * d]` maps (channels head-major); returns the same shape."""
  num_heads: int
  window: tuple  # (h, w) of one stripe; H and W multiples of it
  attn_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, q, k, v, *, train: bool):
    _, h, w, c = q.shape
    n, d = self.window[0] * self.window[1], c // self.num_heads

    def heads(t):  # [B * nW, n, C] -> [B * nW, heads, n, d]
      return t.reshape(-1, n, self.num_heads, d).transpose(0, 2, 1, 3)

    q, k, v = (window_partition(t, self.window) for t in (q, k, v))  # [B * nW, n, C], nW stripes per image
    lepe = DepthwiseConv(3, name="get_v", dtype=self.dtype, param_dtype=self.param_dtype)(
        v.reshape(-1, *self.window, c))  # E V, per stripe
    dropout = nn.Dropout(self.attn_drop_rate, deterministic=False) if train and self.attn_drop_rate > 0 else None
    y = attend(heads(q), heads(k), heads(v), dropout)  # [B * nW, heads, n, d]
    y = y.transpose(0, 2, 1, 3).reshape(-1, n, c) + lepe.reshape(-1, n, c)
    return window_reverse(y, self.window, (h, w))


def cross_shaped_window_attention(x, *, num_heads: int, split_size: int, full: bool = False, qkv_bias: bool = True,
                                  attn_drop_rate: float = 0.0, train: bool = False, dtype=jnp.float32,
                                  param_dtype=jnp.float32):
  """CSWin-Attention (eq. 2) of a map `[B, H, W, C] -> [B, H, W, C]`, its submodules created in the calling module
  under the official `CSWinBlock`'s names: `qkv` (kernel `[C, 3, heads, d]`, torch's `[3C, C]` layout), `attns_0`
  (vertical stripes, heads `:K/2`), `attns_1` (horizontal stripes, heads `K/2:`) or with `full` only `attns_0` (all
  heads, the whole map), and `proj` (kernel `[heads, d, C]`). The official block applies no dropout after `proj`."""
  b, h, w, dim = x.shape
  windows = stripe_windows((h, w), split_size, full)
  branches = len(windows)
  if dim % num_heads or num_heads % branches:
    raise ValueError(f"cross-shaped window attention: embed dim {dim} and num_heads={num_heads}; accepted: num_heads "
                     f"dividing the dim{'' if full else ', even (two halves of heads)'}")
  head_dim, per_branch = dim // num_heads, num_heads // branches
  kw = dict(dtype=dtype, param_dtype=param_dtype)
  qkv = Projection((3, num_heads, head_dim), ("embed", None, "heads", "kv"), use_bias=qkv_bias, name="qkv", **kw)(
      x)  # [B, H, W, 3, heads, d]
  outs = []
  for i, window in enumerate(windows):
    q, k, v = (qkv[..., j, i * per_branch:(i + 1) * per_branch, :].reshape(b, h, w, per_branch * head_dim)
               for j in range(3))
    outs.append(LePEAttention(per_branch, window, attn_drop_rate, name=f"attns_{i}", **kw)(q, k, v, train=train))
  y = jnp.concatenate(outs, axis=-1) if branches > 1 else outs[0]
  return Projection((dim,), ("heads", "kv", "embed"), axis=(-2, -1), name="proj", **kw)(
      y.reshape(b, h, w, num_heads, head_dim))
