"""Official CSWin checkpoints (`microsoft/CSWin-Transformer` `models/cswin.py`; timm has no CSWin) ->
`jaxvit.models.cswin.CSWinTransformer`.

Names are the official ones but for the convs jaxvit's `ConvEmbed` holds: `stage1_conv_embed.{0,2}` (conv, LayerNorm)
-> `stage1_conv_embed/{proj,norm}` and `merge{s}.conv` -> `merge{s}/proj`. Where the official block runs a stage of
resolution `img_size / 2^(s+1)` equal to its split size with one full-attention branch (`attns.0.get_v` over all
channels), its two halves fill `attns_0` and `attns_1` here (the same function).
"""

import re

import numpy as np

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
TIMM_ARGS = ()


def _collapsed(model, stage: int) -> bool:
  """Whether the official block of 1-based `stage` (not the last) has one branch: its resolution
  `img_size // 2^(stage+1)` equals its split size."""
  size = model.img_size if isinstance(model.img_size, int) else model.img_size[0]
  return stage < len(model.depths) and size // 2 ** (stage + 1) == model.split_sizes[stage - 1]


def timm_name(path: str, model) -> str:
  path = re.sub(r"^stage1_conv_embed/proj/", "stage1_conv_embed_0/", path)
  path = re.sub(r"^stage1_conv_embed/norm/", "stage1_conv_embed_2/", path)
  path = re.sub(r"^(merge\d+)/proj/", r"\1/conv/", path)
  block = re.match(r"stage(\d+)_(\d+)/attns_1/", path)
  if block and _collapsed(model, int(block.group(1))):
    path = path.replace("/attns_1/", "/attns_0/")
  name = default_timm_name(path)  # stage1_0 -> stage1.0, attns_0 -> attns.0
  return name.replace("stage1.conv.embed.", "stage1_conv_embed.")


def special(path: str, tensor: np.ndarray, target_shape, model):
  """The half of a collapsed stage's full-width `get_v` that branch `attns_{i}` holds."""
  match = re.search(r"attns_(\d)/get_v/", path)
  if match and tensor.shape[0] == 2 * target_shape[-1]:
    half = target_shape[-1]
    tensor = tensor[int(match.group(1)) * half:(int(match.group(1)) + 1) * half]
    return tensor.transpose(2, 3, 1, 0) if tensor.ndim == 4 else tensor
  return None
