"""timm `TNT` (`tnt.py`) -> `jaxvit.models.tnt.TNT`: the same names; the word position embedding is kept NHWC
here (timm's `pixel_pos` is `[1, inner_dim, q, q]`), and the patch position embedding is resampled to the
model's grid (as timm's `checkpoint_filter_fn`)."""

from jaxvit.convert.mapping import default_timm_name
from jaxvit.layers.pos_embed import resample_abs_pos_embed

HEADS = ("head",)
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)


def timm_name(path: str, model) -> str:
  return default_timm_name(path)


def special(path: str, tensor, target_shape, model):
  if path == "pixel_pos":
    return tensor.transpose(0, 2, 3, 1)  # NCHW -> NHWC
  if path == "patch_pos" and tensor.shape != tuple(target_shape):
    return resample_abs_pos_embed(tensor, model.grid, num_prefix_tokens=1)
  return None


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm TNT instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, in_chans=module.in_chans,
              img_size=tuple(module.pixel_embed.img_size), global_pool=module.global_pool or "token")
