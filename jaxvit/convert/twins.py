"""timm `Twins` (`twins.py`) -> `jaxvit.models.twins.Twins`: the names are timm's except the PEG's conv, which
timm wraps in a one-element `nn.Sequential` (`pos_block.{k}.proj.0`)."""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)


def timm_name(path: str, model) -> str:
  first, rest = path.split("/", 1)
  for prefix in ("patch_embeds", "pos_block"):  # names with an underscore of their own
    if first.startswith(prefix + "_"):
      rest = rest.replace("proj/", "proj/0/", 1) if prefix == "pos_block" else rest
      return f"{prefix}.{first[len(prefix) + 1:]}." + default_timm_name(rest)
  return default_timm_name(path)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm Twins instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, in_chans=module.in_chans,
              img_size=tuple(module.patch_embeds[0].img_size))
