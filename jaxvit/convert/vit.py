"""timm `VisionTransformer` / `VisionTransformerDistilled`, and the RoPE-ViTs of timm's `Eva` ->
`jaxvit.models.vit.VisionTransformer`. `Eva` names LayerScale `gamma_1` / `gamma_2` and keeps RoPE-Mixed's
frequencies of every block in one `rope.freqs` `[2, depth, heads, head_dim / 2]`. Official DynamicViT checkpoints
(`raoyongming/DynamicViT`, timm's names plus `score_predictor.{i}.in_conv` / `out_conv`) convert to a model with
`reduction=dict(kind="dynamicvit", ...)`."""

from jaxvit.convert.mapping import LEAF_NAMES, default_timm_name
from jaxvit.layers import resample_abs_pos_embed

HEADS = ("head", "head_dist")  # classifier modules, re-initialised when num_classes changes
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)


def _is_eva(model) -> bool:
  return bool(model.position_encoding[1])  # timm builds its RoPE-ViTs with `Eva`


# DynamicViT's `PredictorLG`: jaxvit module -> the official `nn.Sequential` entry
_PREDICTOR = {"in_norm": "in_conv.0", "in_proj": "in_conv.1", "out_fc1": "out_conv.0", "out_fc2": "out_conv.2",
              "out_fc3": "out_conv.4"}


def timm_name(path: str, model) -> str:
  path = path.replace("encoder/", "").replace("tokens/", "")
  if path.startswith("score_predictor_"):
    predictor, module, leaf = path.split("/")
    return f"score_predictor.{predictor.rsplit('_', 1)[1]}.{_PREDICTOR[module]}.{LEAF_NAMES[leaf]}"
  if path.startswith("patch_embed/"):
    path = path.replace("patch_embed/", "patch_embed/proj/")
  if path.endswith("rope/freqs"):
    return "rope.freqs"
  if _is_eva(model):
    path = path.replace("ls1/gamma", "gamma_1").replace("ls2/gamma", "gamma_2")
  return default_timm_name(path)


def special(path: str, tensor, target_shape, model):
  """Position embeddings are resampled to the model's grid (timm's `resample_abs_pos_embed`); a block takes its
  slice of `rope.freqs`."""
  if path.endswith("rope/freqs"):
    return tensor[:, int(path.split("/")[1].split("_")[1])]
  if path != "pos_embed" or tensor.shape == tuple(target_shape):
    return None
  prefix = 0 if model.no_embed_class else model.num_prefix_tokens
  return resample_abs_pos_embed(tensor, model.grid, num_prefix_tokens=prefix)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm ViT instance's configuration."""
  class_token = module.cls_token is not None
  reg_tokens = getattr(module, "num_reg_tokens", module.num_prefix_tokens - int(class_token))  # Eva: no dist token
  return dict(num_classes=module.num_classes, img_size=tuple(module.patch_embed.img_size),
              global_pool=module.global_pool, class_token=class_token, reg_tokens=reg_tokens,
              no_embed_class=module.no_embed_class, fc_norm=type(module.fc_norm).__name__ != "Identity")
