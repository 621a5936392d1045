"""timm `MetaFormer` (`metaformer.py`: PoolFormer, PoolFormerV2) -> `jaxvit.models.metaformer.MetaFormer`.

The names match but for the stem and head (`stem_conv` -> `stem.conv`, `head_fc` -> `head.fc`) and the gains,
whose parameter timm calls `scale` (not a norm's `weight`): `layer_scale1.scale`, `res_scale1.scale` and
StarReLU's `mlp.act.scale`. The MLPs' 1x1 conv kernels `[out, in, 1, 1]` become dense `[in, out]` by the generic
layout change.
"""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head_fc",)
TIMM_ARGS = ()  # jaxvit fields timm's constructor also takes (besides num_classes)
_GAINS = ("layer_scale1", "layer_scale2", "res_scale1", "res_scale2", "act")


def timm_name(path: str, model) -> str:
  first, rest = path.split("/", 1)
  if first.startswith(("stem_", "head_")):
    path = first.replace("_", "/", 1) + "/" + rest
  *mods, leaf = path.split("/")
  name = default_timm_name(path)
  return name[:-len("weight")] + "scale" if leaf == "scale" and mods[-1] in _GAINS else name


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm MetaFormer instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, in_chans=module.in_chans)
