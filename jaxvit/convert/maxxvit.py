"""timm `MaxxVit` (`maxxvit.py`) -> `jaxvit.models.maxxvit.MaxxVit`. Flat jaxvit names stand for timm's
nesting (`stages_2_0` = `stages.2.blocks.0`, `stem_conv1` = `stem.conv1`, `head_pre_logits` =
`head.pre_logits.fc`); relative-position tables keep timm's layout as they are."""

import re

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)  # the classifier `fc` only: the TF models' head norm and pre-logits MLP are kept
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)
_RENAME = {"stem_conv1": "stem/conv1", "stem_norm1": "stem/norm1", "stem_conv2": "stem/conv2",
           "head_norm": "head/norm", "head_pre_logits": "head/pre_logits/fc", "shortcut_expand": "shortcut/expand"}


def timm_name(path: str, model) -> str:
  path = re.sub(r"^stages_(\d+)_(\d+)/", r"stages/\1/blocks/\2/", path)
  path = "/".join(_RENAME.get(part, part) for part in path.split("/"))
  return default_timm_name(path)


def special(path: str, tensor, target_shape, model):
  """Relative-position tables are stored in timm's layout (no transpose)."""
  if path.endswith("relative_position_bias_table"):
    return tensor.reshape(target_shape)
  return None


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm MaxxVit instance (its architecture is the registry name's)."""
  img_size = tuple(module.img_size)
  block = module.stages[0].blocks[0]
  attn = block.attn_grid if hasattr(block, "attn_grid") else block.attn  # MaxxVitBlock / ParallelMaxxVitBlock
  partition = tuple(attn.partition_size)
  kw = dict(num_classes=module.num_classes, in_chans=module.in_chans, img_size=img_size)
  if partition != tuple(s // 32 for s in img_size):
    kw["partition_size"] = partition
  return kw
