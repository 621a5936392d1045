"""timm `SwiftFormer` (`swiftformer.py`) -> `jaxvit.models.swiftformer.SwiftFormer`.

The names match but for the LayerScales `layer_scale_1` / `layer_scale_2`, whose underscore-digit is part of the
name, not a `Sequential` index. Depthwise kernels `[C, 1, 3, 3]`, LayerScale gammas `[C, 1, 1]` and 1x1 conv
kernels `[out, in, 1, 1]` take their jaxvit shapes by the generic layout change.
"""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head", "head_dist")
TIMM_ARGS = ()  # jaxvit fields timm's constructor also takes (besides num_classes)


def timm_name(path: str, model) -> str:
  path = path.replace("layer_scale_1/", "layer_scale_one/").replace("layer_scale_2/", "layer_scale_two/")
  name = default_timm_name(path)
  return name.replace("layer_scale_one.", "layer_scale_1.").replace("layer_scale_two.", "layer_scale_2.")


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm SwiftFormer instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, in_chans=module.in_chans)
