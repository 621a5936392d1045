"""The registry as test cases: code paths, their cheapest representatives, and small CI-sized variants.

A model's code path is its family (Module class) plus every field that is not a size; the default
run tests the smallest registered model of each path (by published parameter count), and marked runs
test them all (DESIGN.md, Tests: budget CI).
"""

import dataclasses

import jaxvit
from published import PUBLISHED

# fields that change sizes, not code paths; each family adds its own
SIZE_FIELDS = {"embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes",
               "depths", "channels", "widths", "group_sizes", "stem_width", "base_width",  # CNN stages
               "token_mlp_ratio", "layer_scale_init",  # mlp_mixer
               "img_scale",  # CrossViT: the branches' image sizes, set by img_size
               "head_hidden_size", "partition_size", "dim_head", "rel_pos_dim",  # maxxvit
               "dims", "embed_dims", "layer_scale_init_values", "layer_scale_init_value",  # metaformer / swiftformer
               "layers", "stem_hidden_dim",  # VOLO (and embed_dims)
               "inner_dim", "num_heads_inner", "num_heads_outer",  # TNT
               "mlp_ratios", "sr_ratios",  # PVTv2 / Twins (and embed_dims)
               "token_dim",  # T2T-ViT (tokens_type is a code path)
               "pixel", "step_stride", "step_dilation",  # Hire-MLP's region sizes and shifts
               "coarse_size", "keep_ratio", "ema_blocks",  # CF-ViT
               "qk_dims", "head_dim", "n_win", "topks",  # BiFormer (region counts; routed / global stages)
               "patch_sizes", "split_hidden_ratio",  # S2-MLP / S2-MLPv2 (and embed_dims, depths, mlp_ratios)
               "peg_blocks",  # CPVT: where the PEGs go (the small clone keeps one PEG block and one without)
               "split_sizes",  # CSWin: stripe widths per stage (and embed_dim, depths, num_heads)
               "gate_center",  # A-ViT: the halting score's bias (30 for Tiny, 75 for Small; a value, not a code path)
               # zoo: family size fields
               }


def is_cnn(model) -> bool:
  """No patches: any input size works, and `img_size` is only the reference resolution."""
  return not hasattr(model, "patch_size")


def code_path(name):
  """Class + non-size fields. The input size is a size too: other resolutions are tested where they change the
  code (`tests/convert/test_parity.py` `other_resolution`, and each family's own tests)."""
  model = jaxvit.create_model(name)
  return type(model).__name__, tuple((f.name, getattr(model, f.name)) for f in dataclasses.fields(model)
                                     if f.init and f.name not in SIZE_FIELDS | {"img_size", "parent", "name"})


def representatives(names):
  """The smallest model of each code path, by its published parameter count (no tracing of every model; a model
  without one, which `test_params_and_gmacs_match_published` fails, comes last)."""
  groups = {}
  for name in names:
    groups.setdefault(code_path(name), []).append(name)
  return sorted(min(g, key=lambda n: (PUBLISHED.get(n, (float("inf"),))[0], n)) for g in groups.values())


# Module class -> the model at a CI-cheap size (smallest input, fewest blocks that keep every code path).
SMALL = {
    # ViT: a 2x2 patch grid, blocks scanned (all alike); with CPVT's PEG (no scan) two blocks, a PEG after the first
    "VisionTransformer": lambda m: m.clone(img_size=2 * m.patch_size, scan=True) if "peg" not in m.position_parts
                         else m.clone(img_size=2 * m.patch_size, depth=2, peg_blocks=(0,)),
    # ResNet / RegNet: 32 px (one pixel after the stride-32 stages) and at most two blocks per stage
    # (the first, which changes the shape, and one identity-shortcut block)
    "ResNet": lambda m: m.clone(img_size=32, depths=tuple(min(d, 2) for d in m.depths)),
    "RegNet": lambda m: m.clone(img_size=32, depths=tuple(min(d, 2) for d in m.depths)),
    # MlpMixer: a 2x2 patch grid (token mixing is sized by it) and one block (all blocks are alike)
    "MlpMixer": lambda m: m.clone(img_size=2 * m.patch_size, depth=1),
    # CrossViT: 120 px (the large-patch branch then sees 112 px at either scale) and one multi-scale encoder
    "CrossViT": lambda m: m.clone(img_size=120, depth=((1, 1, m.depth[0][-1]),)),
    # MaxxVit: 64 px (partition 2, stage maps 16 ... 2) and one block per stage (the strided one) plus a
    # stride-1 block in the last stage
    "MaxxVit": lambda m: m.clone(img_size=64, depths=(1,) * (len(m.depths) - 1) + (2,)),
    # PoolFormer / SwiftFormer: 32 px (1x1 after the stride-32 stages); one block per stage, SwiftFormer two (a
    # ConvEncoder and the SwiftFormer encoder)
    "MetaFormer": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    "SwiftFormer": lambda m: m.clone(img_size=32, depths=tuple(min(d, 2) for d in m.depths)),
    # Swin: the stage-0 grid twice the first window (stage 0 shifts, later stages clamp the window), two blocks
    # per stage (W-MSA and SW-MSA)
    "SwinTransformer": lambda m: m.clone(img_size=2 * m.patch_size * m.window_sizes[0],
                                         depths=tuple(min(d, 2) for d in m.depths)),
    # VOLO: the smallest legal input (a 2x2 Outlooker map, one token) and one block per stage, one class block
    "VOLO": lambda m: m.clone(img_size=2 * m.patch_size, layers=(1,) * len(m.layers),
                              post_layers=min(m.post_layers, 1)),
    "TNT": lambda m: m.clone(img_size=2 * m.patch_size, depth=1),
    # PVTv2: 32 px (stage maps 8 ... 1, each at least its sr_ratio) and one block per stage (all alike);
    # Twins: 32 px and two blocks per stage (SVT's LSA, padded from 8x8 to 14x14, and GSA; the PEG after the first)
    "PyramidVisionTransformerV2": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    "Twins": lambda m: m.clone(img_size=32, depths=tuple(min(d, 2) for d in m.depths)),
    # T2T-ViT: 32 px (a 2x2 token grid after the 4 x 2 x 2 soft splits) and one scanned block (all alike)
    "T2TViT": lambda m: m.clone(img_size=32, depth=1, scan=True),
    # GFNet: a 2x2 patch grid (the filters are sized by it) and one block; GFNet-H: 32 px (stage grids 8 ... 1)
    # and one block per stage
    "GFNet": lambda m: m.clone(img_size=2 * m.patch_size, depth=1),
    "GFNetPyramid": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    # Hire-MLP: 32 px (stage maps 8 ... 1, stage 1 pads its 4 rows to 6) and a shifted second block in stage 1
    "HireMLPNet": lambda m: m.clone(img_size=32, depths=(1, 2, 1, 1)),
    # CF-ViT: a 2x2 coarse grid (32 px fine, 16 px coarse: 1 + 8 + 2 fine-stage tokens) and two blocks
    "CFViT": lambda m: m.clone(img_size=32, coarse_size=16, depth=2, ema_blocks=(0, 1)),
    # SkipAt: a 2x2 patch grid and four blocks (a computed MSA, two chained Phis, a computed MSA after them);
    # ReViT: two blocks (the first without a residual, the second with)
    "SkipAtViT": lambda m: m.clone(img_size=2 * m.patch_size, depth=4, skip_blocks=(1, 2)),
    "ReViT": lambda m: m.clone(img_size=2 * m.patch_size, depth=2),
    # PVT v1: 32 px (stage maps 8 ... 1, each at least its sr_ratio; stages 2-4 resize their position embeddings) and
    # one block per stage (reduced attention in stages 1-3, the class token's plain attention in stage 4)
    "PyramidVisionTransformer": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    # BiFormer: 32 px with 2 regions per side (stage maps 8 ... 1; top-k 1, 2, 4 routed regions, the last stage's
    # attention with LePE) and one block per stage
    "BiFormer": lambda m: m.clone(img_size=32, n_win=2, topks=(1, 2, 4, m.topks[-1]), depths=(1,) * len(m.depths)),
    # LITv2: 32 px (stage maps 8 ... 1: MLP-only stages, HiLo with one 2x2 window, plain attention; DTM between)
    # and one block per stage
    "LITv2": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    # CycleMLP: 32 px (stage maps 8 ... 1) and one block per stage (all alike); AS-MLP: 32 px, one block per stage
    "CycleNet": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    "ASMLP": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    # S2-MLP / S2-MLPv2: a 2x2 map after the last patch embedding (32 px; v2 28 px: 4x4 then 2x2) and one block
    # per stage (all blocks of a stage are alike)
    "S2MLP": lambda m: m.clone(img_size=2 * m.total_stride, depths=(1,) * len(m.depths)),
    # CvT: 32 px (stage maps 8, 4, 2; k / v 4, 2, 1) and one block per stage (the class token in the last)
    "CvT": lambda m: m.clone(img_size=32, depths=(1,) * len(m.depths)),
    # CSWin: 64 px (stage maps 16, 8, 4, 2: stripes 1, 2 and 2 wide, full attention last) and one block per stage
    "CSWinTransformer": lambda m: m.clone(img_size=64, depths=(1,) * len(m.depths),
                                          split_sizes=tuple(min(s, 2) for s in m.split_sizes)),
    # A-ViT: a 2x2 patch grid and two blocks (halting in the first, forced in the last); AdaViT: two blocks (the
    # first selects tokens only, the second heads and branches too)
    "AViT": lambda m: m.clone(img_size=2 * m.patch_size, depth=2),
    "AdaViT": lambda m: m.clone(img_size=2 * m.patch_size, depth=2),
    # zoo: family small variants
}


def small(model):
  """`model` at its family's CI-sized variant (`SMALL`)."""
  return SMALL[type(model).__name__](model)
