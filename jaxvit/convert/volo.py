"""timm `VOLO` (`volo.py`) -> `jaxvit.models.volo.VOLO`: the names differ only in the conv stem, which timm keeps
as one `nn.Sequential` (`patch_embed.conv.0` conv, `.1` BN, `.2` ReLU, ...), and `post_network`."""

import re

from jaxvit.convert.mapping import default_timm_name
from jaxvit.layers.pos_embed import resample_abs_pos_embed

HEADS = ("head", "aux_head")
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)


def timm_name(path: str, model) -> str:
  stem = re.match(r"patch_embed/(conv|bn)(\d)/(.*)", path)
  if stem:  # conv{i} -> conv.{3 (i - 1)}, bn{i} -> conv.{3 (i - 1) + 1}
    kind, i, leaf = stem.groups()
    path = f"patch_embed/conv_{3 * (int(i) - 1) + (kind == 'bn')}/{leaf}"
  post = path.startswith("post_network_")
  name = default_timm_name(path.replace("post_network_", "post_") if post else path)
  return name.replace("post.", "post_network.", 1) if post else name


def special(path: str, tensor, target_shape, model):
  """The position embedding is already NHWC `[1, h, w, C]` (no conv-kernel transpose); it is resampled
  (bicubic) to the model's grid."""
  if path != "pos_embed":
    return None
  if tensor.shape == tuple(target_shape):
    return tensor
  _, h, w, c = tensor.shape
  return resample_abs_pos_embed(tensor.reshape(1, h * w, c), target_shape[1:3], (h, w)).reshape(target_shape)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm VOLO instance (its architecture is the registry name's)."""
  _, h, w, _ = module.pos_embed.shape
  patch = module.patch_embed.proj.kernel_size[0] * 2  # the stem's stride-2 conv, then the projection
  return dict(num_classes=module.num_classes, in_chans=module.in_chans, img_size=(2 * patch * h, 2 * patch * w),
              global_pool=module.global_pool, post_layers=len(module.post_network or ()),
              use_aux_head=module.use_aux_head)
