"""MBConv: the inverted-residual block with squeeze-excitation (MobileNetV2, Sandler et al. 2018,
arXiv:1801.04381, Table 1; SE: Hu et al. 2018, arXiv:1709.01507), in MaxViT's pre-norm form
(Tu et al. 2022, arXiv:2204.01697, sec. 3.3, eq. 4: x + Proj(SE(DWConv(Conv(Norm(x)))))).

timm's `maxxvit.py` (`MbConvBlock`, `Downsample2d`) is the file followed; the TensorFlow-ported models
use TF "SAME" padding (a stride-2 3x3 conv pads bottom / right only on even inputs) and BatchNorm eps
1e-3, timm's own (`*_rw`) ones torch's symmetric padding and eps 1e-5.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvit.layers.conv import he_normal_fan_out
from jaxvit.layers.init import dense, ones, with_axes, zeros
from jaxvit.layers.mlp import gelu

ACTS = {"gelu": gelu, "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True), "silu": nn.silu}
PADDINGS = ("same", "")  # TF "SAME", or torch's symmetric (k - 1) // 2


def make_divisible(v: float, divisor: int = 8) -> int:
  """timm's `make_divisible`: the nearest multiple of `divisor`, never more than 10% below `v`."""
  new = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * v else new


def bn(train: bool, eps: float, *, dtype=None, param_dtype=None, name=None):
  """torch's `BatchNorm2d` (momentum 0.1) with epsilon `eps`; running statistics in `batch_stats`."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                      name=name, scale_init=with_axes(ones, ("conv_out",)), bias_init=with_axes(zeros, ("conv_out",)))


def conv(features, kernel_size, stride=1, groups=1, *, padding="same", use_bias=False, dtype=None, param_dtype=None,
         name=None):
  """A `kernel_size` convolution with TF "SAME" (`padding="same"`) or torch's symmetric padding."""
  pad = "SAME" if padding == "same" else [((kernel_size - 1) // 2,) * 2] * 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=stride, padding=pad, feature_group_count=groups,
                 use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                 kernel_init=with_axes(he_normal_fan_out, (None, None, "conv_in", "conv_out")),
                 bias_init=with_axes(zeros, ("conv_out",)))


def _pads(n: int, kernel_size: int, stride: int, padding: str) -> tuple:
  """(before, after) padding of one spatial axis of length `n`: TF "SAME" or torch's symmetric."""
  if padding != "same":
    return ((kernel_size - 1) // 2,) * 2
  total = max((-(-n // stride) - 1) * stride + kernel_size - n, 0)
  return total // 2, total - total // 2


class DepthwiseConv(nn.Module):
  """A bias-free depthwise `kernel_size` convolution (kernel HWIO `[k, k, 1, C]`, as `nn.Conv`'s).

  Computed as k * k shifted (strided) slices each scaled per channel: XLA's CPU grouped convolution is
  ~10-20x slower, forward and backward. Each tap is a `dot_general` with the channel as batch axis, so
  MAC counters see the convolution's k * k * C per output pixel.
  """
  kernel_size: int = 3
  stride: int = 1
  padding: str = "same"  # one of PADDINGS
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C] -> [B, H / stride, W / stride, C]
    k, s = self.kernel_size, self.stride
    kernel = self.param("kernel", with_axes(he_normal_fan_out, (None, None, None, "conv_out")), (k, k, 1, x.shape[-1]),
                        self.param_dtype).astype(self.dtype)
    pads = [_pads(n, k, s, self.padding) for n in x.shape[1:3]]
    x = jnp.pad(x.astype(self.dtype), ((0, 0), *pads, (0, 0)))
    ho, wo = ((x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1)
    out = 0
    for i in range(k):
      for j in range(k):
        tap = jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, x.shape[3]),
                            (1, s, s, 1))
        out = out + jnp.einsum("bhwc,c->bhwc", tap, kernel[i, j, 0])
    return out


def avg_pool2(x, padding="same"):
  """timm's 2x2 stride-2 average pool: TF "SAME" pads an odd edge with a zero that counts
  (`AvgPool2dSame`); torch's drops it. `[B, H, W, C] -> [B, H / 2, W / 2, C]`."""
  pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2)) if padding == "same" else "VALID"
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding=pad, count_include_pad=True)


class SqueezeExcite(nn.Module):
  """`x * sigmoid(fc2(act(fc1(mean_hw(x)))))`, timm's `SEModule` (1x1 convs `fc1`, `fc2` as dense layers)."""
  rd_channels: int
  act: str = "silu"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    z = jnp.mean(x, axis=(1, 2), keepdims=True)
    z = ACTS[self.act](dense(self.rd_channels, ("conv_in", "conv_out"), name="fc1", **kw)(z))
    z = dense(x.shape[-1], ("conv_in", "conv_out"), name="fc2", **kw)(z)
    return x * nn.sigmoid(z)


class MBConv(nn.Module):
  """Pre-norm MBConv: `pre_norm` BN, `conv1_1x1` expand + BN-act (`norm1`), depthwise `conv2_kxk`
  (carries the stride) + BN-act (`norm2`), `se`, `conv3_1x1` project; the residual is the input,
  or where strided a `shortcut` 2x2 average pool (+ 1x1 `expand` where the width changes).

  Returns the residual sum without the drop-path applied to the shortcut (`drop_path` is a callable).
  """
  out_chs: int
  stride: int = 1
  expand_ratio: float = 4.0
  expand_output: bool = True  # hidden width from the output (MaxViT) or the input width (timm's rw)
  kernel_size: int = 3
  se_ratio: float = 0.25  # of the output width (expand_output) or the hidden width
  act: str = "gelu_tanh"
  se_act: str = "silu"
  norm_eps: float = 1e-3
  padding: str = "same"  # one of PADDINGS
  output_bias: bool = True  # bias of conv3_1x1 and of the shortcut's expand
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, drop_path):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    act = ACTS[self.act]
    in_chs = x.shape[-1]
    mid = make_divisible((self.out_chs if self.expand_output else in_chs) * self.expand_ratio)
    shortcut = x
    if self.stride == 2:
      shortcut = avg_pool2(x, self.padding)
      if in_chs != self.out_chs:
        shortcut = dense(self.out_chs, ("conv_in", "conv_out"), use_bias=self.output_bias, name="shortcut_expand",
                         kernel_init=he_normal_fan_out, **kw)(shortcut)
    elif in_chs != self.out_chs:
      raise ValueError(f"MBConv: a stride-1 block keeps its width ({in_chs} -> {self.out_chs} given)")

    x = bn(self.train, self.norm_eps, name="pre_norm", **kw)(x)
    x = dense(mid, ("conv_in", "conv_out"), use_bias=False, name="conv1_1x1", kernel_init=he_normal_fan_out, **kw)(x)
    x = act(bn(self.train, self.norm_eps, name="norm1", **kw)(x))
    x = DepthwiseConv(self.kernel_size, self.stride, self.padding, name="conv2_kxk", **kw)(x)
    x = act(bn(self.train, self.norm_eps, name="norm2", **kw)(x))
    rd = int(self.se_ratio * (self.out_chs if self.expand_output else mid))
    x = SqueezeExcite(rd, self.se_act, name="se", **kw)(x)
    x = dense(self.out_chs, ("conv_in", "conv_out"), use_bias=self.output_bias, name="conv3_1x1",
              kernel_init=he_normal_fan_out, **kw)(x)
    return shortcut + drop_path(x)
