"""Convolution + BatchNorm pieces of the CNN families (ResNet, RegNet), laid out as timm's.

`conv2d` is torch's `Conv2d(bias=False)` on NHWC images: symmetric padding `(k - 1) // 2` (timm's
`get_padding` for odd kernels), He-normal (fan-out) init, kernel HWIO `[k, k, C_in / groups, C_out]`.
`batch_norm` is torch's `BatchNorm2d` (eps 1e-5, running-average momentum 0.1): scale / bias in
`params`, running mean / var in `batch_stats`. `ConvBN` is timm's `ConvNormAct` (`conv`, `bn`,
ReLU); `ClassifierHead` is timm's (global average pool, dropout, `fc`).
"""

import flax.linen as nn
import jax.numpy as jnp

from jaxvit.layers.init import dense, ones, with_axes, zeros

he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv2d(features, kernel_size, stride=1, groups=1, *, dtype=None, param_dtype=None, name=None):
  """A bias-free `kernel_size` x `kernel_size` convolution with torch's padding; kernel axes
  `(None, None, "conv_in", "conv_out")`."""
  pad = (kernel_size - 1) // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=stride, padding=((pad, pad), (pad, pad)),
                 feature_group_count=groups, use_bias=False, dtype=dtype, param_dtype=param_dtype, name=name,
                 kernel_init=with_axes(he_normal_fan_out, (None, None, "conv_in", "conv_out")))


def batch_norm(train: bool, *, zero_init=False, dtype=None, param_dtype=None, name=None):
  """BatchNorm over the channel axis: batch statistics when training, running averages at eval.

  `zero_init` starts the scale at zero (timm's `zero_init_last` for a residual branch's last BN).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, name=name,
                      scale_init=with_axes(zeros if zero_init else ones, ("conv_out",)),
                      bias_init=with_axes(zeros, ("conv_out",)))


class ConvBN(nn.Module):
  """Conv -> BatchNorm -> ReLU (`act=False`: no ReLU); submodules `conv`, `bn` as in timm's `ConvNormAct`."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  groups: int = 1
  act: bool = True
  zero_init: bool = False
  train: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = conv2d(self.features, self.kernel_size, self.stride, self.groups, name="conv", **kw)(x)
    x = batch_norm(self.train, zero_init=self.zero_init, name="bn", **kw)(x)
    return nn.relu(x) if self.act else x


def avg_pool_ceil(x):
  """torch's `AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`: an odd edge row / column
  is averaged over the pixels it has. `[B, H, W, C] -> [B, ceil(H / 2), ceil(W / 2), C]`."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding=((0, x.shape[1] % 2), (0, x.shape[2] % 2)),
                     count_include_pad=False)


class ClassifierHead(nn.Module):
  """`[B, H, W, C] -> (pre_logits [B, C], logits [B, num_classes])`: global average pool, dropout,
  then `fc` (zero-initialised, as jaxvit's heads); `num_classes=0` gives `logits = pre_logits`."""
  num_classes: int
  drop_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    pooled = jnp.mean(x, axis=(1, 2))
    return pooled, linear_head(pooled, self.num_classes, self.drop_rate, train, name="fc", dtype=self.dtype,
                               param_dtype=self.param_dtype)


def linear_head(pooled, num_classes: int, drop_rate: float, train: bool, name: str = "head", **kw):
  """Dropout then a zero-initialised linear classifier `name`, created in the calling module; `num_classes=0`
  returns `pooled` (features only)."""
  if num_classes == 0:
    return pooled
  x = nn.Dropout(drop_rate)(pooled, deterministic=not train)
  return dense(num_classes, ("embed", "classes"), name=name, kernel_init=zeros, **kw)(x)
