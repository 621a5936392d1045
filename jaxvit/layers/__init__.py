"""Reusable blocks with no model-level wiring."""

from jaxvit.layers.attention import Attention
from jaxvit.layers.conv import ClassifierHead, ConvBN, avg_pool_ceil, batch_norm, conv2d
from jaxvit.layers.drop import drop_path
from jaxvit.layers.init import dense, layer_norm, with_axes
from jaxvit.layers.layer_scale import LayerScale
from jaxvit.layers.mlp import Mlp, gelu
from jaxvit.layers.patch_embed import PatchEmbed
from jaxvit.layers.pool import POOLS, pool_tokens
from jaxvit.layers.rope import DEFAULT_THETA, ROPES, RotaryEmbedding, apply_rope
from jaxvit.layers.pos_embed import bicubic_resize_matrix, resample_abs_pos_embed, sincos_2d
from jaxvit.layers.squeeze_excite import SqueezeExcite
from jaxvit.layers.tokens import PrefixTokens
