"""timm `RegNet` (`regnet.py`) -> `jaxvit.models.regnet.RegNet`: the same module tree (`stem/conv`,
`s1/b1/se/fc1`, `head/fc`, ...), so names map by the generic rule alone."""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
TIMM_ARGS = ()  # jaxvit fields timm's constructor also takes (besides num_classes)


def timm_name(path: str, model) -> str:
  return default_timm_name(path)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm RegNet instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, in_chans=module.in_chans)
