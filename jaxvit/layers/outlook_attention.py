"""Outlook attention (VOLO, Yuan et al. 2021, arXiv:2106.13112, sec. 2.1, eqs. 2-5), with the sliding-window
`unfold` / `fold` it is built on, written as static strided slices and pads (no convolution, no scatter).

Each position (i, j) of a stride-`s` grid predicts, from its own (pooled) feature, a `K^2 x K^2` attention
map over the `K x K` window of values centred on it: A = softmax(W_A x) (eq. 2), Y_window = A V_window
(eq. 4), and the windows' outputs are summed back onto the pixels they cover (fold, eq. 5).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.init import dense


def unfold(x, kernel_size: int, stride: int = 1, padding: int = 0):
  """torch's `nn.Unfold` on NHWC maps: `[B, H, W, C] -> [B, h, w, k * k, C]`, the `k x k` window (row-major,
  zero outside the image) of every output position; h = (H + 2 p - k) // s + 1 (likewise w).

  One strided slice per window offset: K^2 static copies, no gather indices."""
  b, hh, ww, c = x.shape
  k, s = kernel_size, stride
  h, w = (hh + 2 * padding - k) // s + 1, (ww + 2 * padding - k) // s + 1
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  windows = [jax.lax.slice(x, (0, a, e, 0), (b, a + s * (h - 1) + 1, e + s * (w - 1) + 1, c), (1, s, s, 1))
             for a in range(k) for e in range(k)]
  return jnp.stack(windows, axis=3)


def fold(y, size, kernel_size: int, stride: int = 1, padding: int = 0):
  """torch's `F.fold`, the adjoint of `unfold`: `[B, h, w, k * k, C] -> [B, H, W, C]`, every window's values
  summed onto the pixels it covers (`size` = (H, W)); what falls in the padding is dropped.

  Window offset (a, e) lands on pixels (s i + a - p, s j + e - p): one `lax.pad` per offset (interior padding
  s - 1 spreads the grid out, edge padding shifts it; negative edges crop the border)."""
  _, h, w, kk, _ = y.shape
  k, s = kernel_size, stride
  if kk != k * k:
    raise ValueError(f"fold: window axis has {kk} entries, kernel_size={k} needs {k * k}")
  hh, ww = size
  zero = jnp.zeros((), y.dtype)
  total = None
  for a in range(k):
    for e in range(k):
      lo_h, lo_w = a - padding, e - padding
      config = ((0, 0, 0), (lo_h, hh - lo_h - s * (h - 1) - 1, s - 1), (lo_w, ww - lo_w - s * (w - 1) - 1, s - 1),
                (0, 0, 0))
      part = jax.lax.pad(y[:, :, :, a * k + e], zero, config)
      total = part if total is None else total + part
  return total


class OutlookAttention(nn.Module):
  """VOLO's outlook attention on an NHWC map, timm's `OutlookAttention` (`v`, `attn`, `proj`).

  `v` (eq. 3) projects every pixel; `attn` maps the `stride`-average-pooled map (ceil mode) to `heads x K^4`
  logits, scaled by head_dim^-1/2 and softmaxed per output pixel of the window (eq. 2); the weighted windows
  (eq. 4) are folded back (eq. 5) and projected by `proj`. Padding is `kernel_size // 2`, so the grid is
  ceil(H / stride) x ceil(W / stride) for any input size.
  """
  num_heads: int
  kernel_size: int = 3
  stride: int = 2
  qkv_bias: bool = False
  attn_drop_rate: float = 0.0
  proj_drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, hh, ww, c = x.shape
    k, s, heads = self.kernel_size, self.stride, self.num_heads
    if c % heads:
      raise ValueError(f"embed dim {c} is not divisible by num_heads={heads}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    head_dim = c // heads
    h, w = math.ceil(hh / s), math.ceil(ww / s)
    v = dense(c, ("embed", "heads"), use_bias=self.qkv_bias, name="v", **kw)(x)
    v = unfold(v, k, s, k // 2).reshape(b, h, w, k * k, heads, head_dim)  # [B, h, w, K^2, H, d]
    pooled = nn.avg_pool(x, (s, s), strides=(s, s), padding=((0, -hh % s), (0, -ww % s)), count_include_pad=False)
    logits = dense(heads * k ** 4, ("embed", "heads"), name="attn", **kw)(pooled)
    logits = logits.reshape(b, h, w, heads, k * k, k * k) * jnp.asarray(head_dim ** -0.5, logits.dtype)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    attn = nn.Dropout(self.attn_drop_rate)(attn, deterministic=not train)
    y = jnp.einsum("bijhqk,bijkhd->bijqhd", attn, v).reshape(b, h, w, k * k, c)  # [B, h, w, K^2, C]
    y = fold(y, (hh, ww), k, s, k // 2)  # [B, H, W, C]
    y = dense(c, ("heads", "embed"), name="proj", **kw)(y)
    return nn.Dropout(self.proj_drop_rate)(y, deterministic=not train)
