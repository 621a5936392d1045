"""timm `CrossVit` (`crossvit.py`) -> `jaxvit.models.crossvit.CrossViT`.

Names are timm's except the cross-attention fusion, which jaxvit keeps in one module per direction
(`blocks_{k}/fusion_{d}`): its `norm_in` / `proj_in` are timm's `projs.{d}.0` / `.2`, `norm_out` / `proj_out`
`revert_projs.{d}.0` / `.2`, and `blocks_{j}` timm's `fusion.{d}` (`fusion.{d}.{j}` when an encoder's config asks
for more than zero cross-attention blocks). A linear patch embedding's `kernel` is timm's `proj.weight`.
"""

from jaxvit.convert.mapping import default_timm_name
from jaxvit.layers.pos_embed import resample_abs_pos_embed

HEADS = ("head_0", "head_1")  # classifier modules, re-initialised when num_classes changes
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)
# fusion submodule -> (timm ModuleList, index in its Sequential(LayerNorm, GELU, Linear))
_FUSION = {"norm_in": ("projs", 0), "proj_in": ("projs", 2), "norm_out": ("revert_projs", 0),
           "proj_out": ("revert_projs", 2)}


def timm_name(path: str, model) -> str:
  parts = path.split("/")
  if parts[0].startswith("patch_embed_"):  # patch_embed_{i} -> patch_embed.{i}(.proj)
    parts[0:1] = ["patch_embed", parts[0].rsplit("_", 1)[1]] + ([] if model.multi_conv else ["proj"])
  if len(parts) > 2 and parts[0].startswith("blocks_") and parts[1].startswith("fusion_"):
    d = parts[1].split("_")[1]
    if parts[2] in _FUSION:
      listing, index = _FUSION[parts[2]]
      parts[1:3] = [listing, f"{d}_{index}"]
    else:  # blocks_{j}
      encoder = model.depth[int(parts[0].split("_")[1])]
      j = parts[2].split("_")[1]
      parts[1:3] = ["fusion", f"{d}_{j}" if encoder[-1] else d]
  return default_timm_name("/".join(parts))


def special(path: str, tensor, target_shape, model):
  """Position embeddings are resampled to the branch's grid (timm's `resample_abs_pos_embed`) when `img_size`
  differs from the checkpoint's."""
  if not path.startswith("pos_embed_") or tensor.shape == tuple(target_shape):
    return None
  return resample_abs_pos_embed(tensor, model.grids[int(path.split("_")[-1])], num_prefix_tokens=1)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm CrossVit instance's configuration."""
  size = tuple(module.img_size)
  return dict(num_classes=module.num_classes, img_size=size[0] if size[0] == size[1] else size,
              global_pool=module.global_pool, crop_scale=module.crop_scale)
