"""timm `ResNet` (`resnet.py`) -> `jaxvit.models.resnet.ResNet`: the names differ only in the deep stem
and the shortcut, which timm keeps as `nn.Sequential` indices, and the classifier (timm's `fc`)."""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
TIMM_ARGS = ()  # jaxvit fields timm's constructor also takes (besides num_classes)
# deep stem: timm's `conv1 = Sequential(conv, bn, act, conv, bn, act, conv)`
_STEM = {"stem_conv0": "conv1_0", "stem_bn0": "conv1_1", "stem_conv1": "conv1_3", "stem_bn1": "conv1_4",
         "stem_conv2": "conv1_6"}


def timm_name(path: str, model) -> str:
  first, rest = path.split("/", 1)
  path = rest if first == "head" else f"{_STEM.get(first, first)}/{rest}"  # head/fc -> fc
  # shortcut: Sequential(conv, bn), or Sequential(pool, conv, bn) with avg_down (ResNet-D)
  conv = int(model.avg_down)
  path = path.replace("downsample/conv/", f"downsample_{conv}/").replace("downsample/bn/", f"downsample_{conv + 1}/")
  return default_timm_name(path)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm ResNet instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, in_chans=module.in_chans)
