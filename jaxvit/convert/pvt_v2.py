"""timm `PyramidVisionTransformerV2` (`pvt_v2.py`) -> `jaxvit.models.pvt_v2.PyramidVisionTransformerV2`: the
names are timm's, so the generic mapping (numbered submodules, torch leaf names, layouts) does it all."""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
TIMM_ARGS = ()  # timm's constructor takes no img_size: any input size works


def timm_name(path: str, model) -> str:
  return default_timm_name(path)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm PVTv2 instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, in_chans=module.in_chans)
