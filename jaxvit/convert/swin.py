"""timm `SwinTransformer` (`swin_transformer.py`) -> `jaxvit.models.swin.SwinTransformer`: the names match
timm's except the patch embedding's projection (`patch_embed.proj`) and norm (`patch_embed.norm`), and the
relative position bias table, which keeps timm's `[positions, heads]` layout (no transpose)."""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)


def timm_name(path: str, model) -> str:
  if path.startswith("patch_embed/"):
    path = path.replace("patch_embed/", "patch_embed/proj/")
  path = path.replace("patch_embed_norm/", "patch_embed/norm/")
  return default_timm_name(path)


def special(path: str, tensor, target_shape, model):
  """The bias table is copied as is; a table of another window size (a window clamped to a smaller grid)
  is not resampled."""
  if not path.endswith("relative_position_bias_table"):
    return None
  if tensor.shape != tuple(target_shape):
    raise ValueError(f"relative position table {tensor.shape} is for another window size than {tuple(target_shape)} "
                     f"(the window is clamped to the stage grid at this img_size); resampling it is not supported")
  return tensor


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm Swin instance: class count, input size and per-stage windows."""
  windows = tuple(int(w[0]) for w in module._ref_window_sizes)
  if any(w[0] != w[1] for w in module._ref_window_sizes):
    raise ValueError(f"jaxvit's Swin takes square windows; timm's model has {module._ref_window_sizes}")
  return dict(num_classes=module.num_classes, in_chans=module.in_chans, img_size=tuple(module.patch_embed.img_size),
              window_size=windows[0] if len(set(windows)) == 1 else windows)
