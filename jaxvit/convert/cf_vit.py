"""Official CF-ViT checkpoints (ChenMnZ/CF-ViT `deit/models_deit.py`, timm's DeiT names plus `pos_embed_list.{0,1}`
and the `reuse_block` LayerNorm + MLP) -> `jaxvit.models.cf_vit.CFViT`."""

from jaxvit.convert import vit
from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
_NAMES = {"pos_embed_coarse": "pos_embed_list.0", "pos_embed": "pos_embed_list.1"}


def timm_name(path: str, model) -> str:
  if path in _NAMES:
    return _NAMES[path]
  if path.startswith("reuse_norm/"):
    return default_timm_name(path.replace("reuse_norm/", "reuse_block/0/"))
  if path.startswith("reuse_mlp/"):
    return default_timm_name(path.replace("reuse_mlp/", "reuse_block/1/"))
  return vit.timm_name(path, model)
