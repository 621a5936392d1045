"""Published parameter counts (M) and GMACs at each model's reference resolution.

Source: timm's `results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv` (columns `param_count`,
`infer_gmacs`; this file counts attention's matmuls, older ones did not); the DeiT paper and README
agree to their rounding. GMACs follow fvcore's convention (see jaxvit/bench/flops.py).
"""

PUBLISHED = {
    # name: (params M, GMACs)
    "vit_tiny_patch16_224": (5.72, 1.26),
    "vit_small_patch16_224": (22.05, 4.61),
    "vit_small_patch32_224": (22.88, 1.15),
    "vit_base_patch16_224": (86.57, 17.58),
    "vit_base_patch16_384": (86.86, 55.54),
    "deit_tiny_patch16_224": (5.72, 1.26),
    "deit_small_patch16_224": (22.05, 4.61),
    "deit_base_patch16_224": (86.57, 17.58),
    "deit_base_patch16_384": (86.86, 55.54),
    "deit_tiny_distilled_patch16_224": (5.91, 1.27),
    "deit_small_distilled_patch16_224": (22.44, 4.63),
    "deit_base_distilled_patch16_224": (87.34, 17.68),
    "deit_base_distilled_patch16_384": (87.63, 55.65),
    "deit3_small_patch16_224": (22.06, 4.61),
    "deit3_base_patch16_224": (86.59, 17.58),
}
