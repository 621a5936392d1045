"""timm `MlpMixer` (`mlp_mixer.py`: MLP-Mixer, ResMLP, gMLP, GLU-Mixer) -> `jaxvit.models.mlp_mixer.MlpMixer`.

The names are timm's except the patch embedding (timm's `stem.proj` convolution) and ResMLP's LayerScale,
which timm keeps as bare parameters `ls1` / `ls2`; Affine's `alpha` / `beta` `[1, 1, C]` become `[C]`.
"""

from jaxvit.convert.mapping import default_timm_name

HEADS = ("head",)
TIMM_ARGS = ("img_size",)  # jaxvit fields timm's constructor also takes (besides num_classes)


def timm_name(path: str, model) -> str:
  if path.startswith("stem/"):
    path = path.replace("stem/", "stem/proj/")
  return default_timm_name(path)


def overrides_from_timm(module) -> dict:
  """The jaxvit overrides that reproduce a timm MlpMixer instance (its architecture is the registry name's)."""
  return dict(num_classes=module.num_classes, img_size=tuple(module.stem.img_size), in_chans=module.in_chans)
