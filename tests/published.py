"""Published parameter counts (M) and GMACs at each model's reference resolution (its `img_size`:
timm's default pretrained input size, 224 unless noted).

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
    # ResNet / ResNet-D / ResNet-T / Wide ResNet / ResNeXt (timm's resnet.py)
    "resnet10t": (5.44, 0.7),  # at 176
    "resnet14t": (10.08, 1.07),  # at 176
    "resnet18": (11.69, 1.82),
    "resnet18d": (11.71, 2.06),
    "resnet26": (16.0, 2.36),
    "resnet26t": (16.01, 3.35),  # at 256
    "resnet26d": (16.01, 2.6),
    "resnet34": (21.8, 3.67),
    "resnet34d": (21.82, 3.91),
    "resnet50": (25.56, 4.11),
    "resnet50t": (25.57, 4.32),
    "resnet50d": (25.58, 4.35),
    "resnet101": (44.55, 7.83),
    "resnet101d": (44.57, 10.55),  # at 256
    "resnet152": (60.19, 11.56),
    "resnet152d": (60.21, 15.41),  # at 256
    "resnet200": (64.67, 15.07),
    "resnet200d": (64.69, 20.0),  # at 256
    "wide_resnet50_2": (68.88, 11.43),
    "resnext50_32x4d": (25.03, 4.26),
    # RegNetY (timm's regnet.py)
    "regnety_002": (3.16, 0.2),
    "regnety_004": (4.34, 0.41),
    "regnety_006": (6.06, 0.61),
    "regnety_008": (6.26, 0.81),
    "regnety_016": (11.2, 1.63),
    "regnety_032": (19.44, 3.2),
    "regnety_040": (20.65, 4.0),
    "regnety_064": (30.58, 6.39),
    "regnety_080": (39.18, 8.0),
    "regnety_120": (51.82, 12.14),
    "regnety_160": (83.59, 15.96),
    "regnety_320": (145.05, 32.34),
    # zoo: swin
    # Swin / Swin-S3 (timm's swin_transformer.py); fvcore on the timm models agrees with every row
    "swin_tiny_patch4_window7_224": (28.29, 4.51),
    "swin_small_patch4_window7_224": (49.61, 8.77),
    "swin_base_patch4_window7_224": (87.77, 15.47),
    "swin_large_patch4_window7_224": (196.53, 34.53),
    "swin_base_patch4_window12_384": (87.9, 47.19),  # at 384
    "swin_large_patch4_window12_384": (196.74, 104.08),  # at 384
    "swin_s3_tiny_224": (28.33, 4.64),
    "swin_s3_small_224": (49.74, 9.43),
    "swin_s3_base_224": (71.13, 13.69),
    # zoo: pvt_v2 / twins
    # PVTv2 (timm's pvt_v2.py) and Twins (timm's twins.py); fvcore agrees once attention's matmuls are added
    "pvt_v2_b0": (3.67, 0.57),
    "pvt_v2_b1": (14.01, 2.12),
    "pvt_v2_b2": (25.36, 4.05),
    "pvt_v2_b2_li": (22.55, 3.91),
    "pvt_v2_b3": (45.24, 6.92),
    "pvt_v2_b4": (62.56, 10.14),
    "pvt_v2_b5": (81.96, 11.76),
    "twins_pcpvt_small": (24.11, 3.83),
    "twins_pcpvt_base": (43.83, 6.68),
    "twins_pcpvt_large": (60.99, 9.84),
    "twins_svt_small": (24.06, 2.94),
    "twins_svt_base": (56.07, 8.59),
    "twins_svt_large": (99.27, 15.15),
    # zoo: mlp_mixer (mixer, resmlp, gmlp)
    "mixer_s32_224": (19.1, 1.0),
    "mixer_s16_224": (18.53, 3.79),
    "mixer_b32_224": (60.29, 3.24),
    "mixer_b16_224": (59.88, 12.62),
    "mixer_l32_224": (206.94, 11.27),
    "mixer_l16_224": (208.2, 44.6),
    "gmixer_12_224": (12.7, 2.67),
    "gmixer_24_224": (24.72, 5.28),
    "resmlp_12_224": (15.35, 3.01),
    "resmlp_24_224": (30.02, 5.96),
    "resmlp_36_224": (44.69, 8.91),
    "resmlp_big_24_224": (129.14, 100.23),
    "gmlp_ti16_224": (5.87, 1.34),
    "gmlp_s16_224": (19.42, 4.42),
    "gmlp_b16_224": (73.08, 15.78),
    # zoo: metaformer (poolformer) / swiftformer
    # PoolFormer / PoolFormerV2 (timm's metaformer.py) and SwiftFormer (swiftformer.py); fvcore agrees
    "poolformer_s12": (11.92, 1.82),
    "poolformer_s24": (21.39, 3.41),
    "poolformer_s36": (30.86, 5.0),
    "poolformer_m36": (56.17, 8.8),
    "poolformer_m48": (73.47, 11.59),
    "poolformerv2_s12": (11.89, 1.83),
    "poolformerv2_s24": (21.34, 3.42),
    "poolformerv2_s36": (30.79, 5.01),
    "poolformerv2_m36": (56.08, 8.81),
    "poolformerv2_m48": (73.35, 11.59),
    "swiftformer_xs": (3.48, 0.61),
    "swiftformer_s": (6.09, 0.99),
    "swiftformer_l1": (12.06, 1.6),
    "swiftformer_l3": (28.49, 4.01),
    # zoo: crossvit
    # CrossViT (timm's crossvit.py; at 240 px, the large-patch branch at 224; 408 px: 384)
    "crossvit_tiny_240": (7.01, 1.57),
    "crossvit_small_240": (26.86, 5.63),
    "crossvit_base_240": (105.03, 21.22),
    "crossvit_9_240": (8.55, 1.85),
    "crossvit_15_240": (27.53, 5.81),
    "crossvit_18_240": (43.27, 9.05),
    "crossvit_9_dagger_240": (8.78, 1.99),
    "crossvit_15_dagger_240": (28.21, 6.13),
    "crossvit_18_dagger_240": (44.27, 9.5),
    "crossvit_15_dagger_408": (28.5, 21.45),  # at 408
    "crossvit_18_dagger_408": (44.61, 32.47),  # at 408
    # zoo: maxxvit (maxvit)
    "maxvit_tiny_tf_224": (30.92, 5.6),
    "maxvit_tiny_tf_384": (30.98, 17.53),  # at 384
    "maxvit_tiny_tf_512": (31.05, 33.49),  # at 512
    "maxvit_small_tf_224": (68.93, 11.66),
    "maxvit_small_tf_384": (69.02, 35.87),  # at 384
    "maxvit_small_tf_512": (69.13, 67.26),  # at 512
    "maxvit_base_tf_224": (119.47, 24.04),
    "maxvit_base_tf_384": (119.65, 73.8),  # at 384
    "maxvit_base_tf_512": (119.88, 138.02),  # at 512
    "maxvit_large_tf_224": (211.79, 43.68),
    "maxvit_large_tf_384": (212.03, 132.55),  # at 384
    "maxvit_large_tf_512": (212.33, 244.75),  # at 512
    "maxvit_xlarge_tf_224": (506.99, 97.52),  # 21843 classes (timm's default: in21k weights)
    "maxvit_xlarge_tf_384": (475.32, 292.78),  # at 384
    "maxvit_xlarge_tf_512": (475.77, 534.14),  # at 512
    "maxvit_pico_rw_256": (7.46, 1.83),  # at 256
    "maxvit_nano_rw_256": (15.45, 4.46),  # at 256
    "maxvit_tiny_rw_224": (29.06, 5.11),
    "maxvit_tiny_rw_256": (29.07, 6.74),  # at 256
    "maxvit_tiny_pm_256": (30.09, 6.61),  # at 256
    "maxvit_rmlp_pico_rw_256": (7.52, 1.85),  # at 256
    "maxvit_rmlp_nano_rw_256": (15.5, 4.47),  # at 256
    "maxvit_rmlp_tiny_rw_256": (29.15, 6.77),  # at 256
    "maxvit_rmlp_small_rw_224": (64.9, 10.75),
    "maxvit_rmlp_small_rw_256": (64.9, 14.15),  # at 256
    "maxvit_rmlp_base_rw_224": (116.14, 23.15),
    "maxvit_rmlp_base_rw_384": (116.14, 70.97),  # at 384
    # zoo: volo / tnt
    # VOLO (timm's volo.py; at 384 / 448 / 512 where the name says) and TNT (timm's tnt.py)
    "volo_d1_224": (26.63, 6.94),
    "volo_d1_384": (26.78, 22.75),
    "volo_d2_224": (58.68, 14.34),
    "volo_d2_384": (58.87, 46.17),
    "volo_d3_224": (86.33, 20.78),
    "volo_d3_448": (86.63, 96.33),
    "volo_d4_224": (192.96, 44.34),
    "volo_d4_448": (193.41, 197.13),
    "volo_d5_224": (295.46, 72.4),
    "volo_d5_448": (295.91, 315.06),
    "volo_d5_512": (296.09, 425.09),
    "tnt_s_patch16_224": (23.77, 5.25),
    "tnt_s_legacy_patch16_224": (23.76, 5.24),
    "tnt_b_patch16_224": (65.43, 14.1),
    # zoo: vit rope
    "vit_small_patch16_rope_224": (21.98, 4.61),
    "vit_small_patch16_rope_ape_224": (22.06, 4.61),
    "vit_small_patch16_rope_mixed_224": (21.99, 4.61),
    "vit_small_patch16_rope_mixed_ape_224": (22.06, 4.61),
    "vit_base_patch16_rope_224": (86.43, 17.58),
    "vit_base_patch16_rope_ape_224": (86.59, 17.58),
    "vit_base_patch16_rope_mixed_224": (86.44, 17.58),
    "vit_base_patch16_rope_mixed_ape_224": (86.59, 17.58),
    "vit_large_patch16_rope_224": (304.17, 61.6),
    "vit_large_patch16_rope_ape_224": (304.37, 61.6),
    "vit_large_patch16_rope_mixed_224": (304.2, 61.6),
    "vit_large_patch16_rope_mixed_ape_224": (304.4, 61.6),
    # zoo: t2t_vit
    # T2T-ViT: yitu-opensource/T2T-ViT models/t2t_vit.py @0f63dc9558f4d192de926504dbddfa1b3f5db6ca, torch
    # sum(p.numel() for p in model.parameters()) (includes the frozen sinusoid pos_embed and Performer features w)
    # and fvcore GMACs at 224 (its einsum counts are rounded to 4 digits: +7e-6 GMACs on the Performer models);
    # the README's MACs agree to its one decimal except T2T-ViT-7 (1.1) and -24 (13.8), counted with another tool
    "t2t_vit_7": (4.31, 1.16),
    "t2t_vit_10": (5.89, 1.53),
    "t2t_vit_12": (6.94, 1.77),
    "t2t_vit_14": (21.55, 4.8),
    "t2t_vit_19": (39.18, 8.5),
    "t2t_vit_24": (64.11, 13.69),
    "t2t_vit_t_14": (21.54, 6.11),
    "t2t_vit_t_19": (39.17, 9.81),
    "t2t_vit_t_24": (64.1, 15.0),
    "t2t_vit_14_resnext": (21.55, 4.8),
    "t2t_vit_14_wide": (25.16, 5.24),
    # zoo: gfnet
    # GFNet: raoyongming/GFNet gfnet.py (+ main_gfnet.py's variants) @2de48b626ea805de82a7f389fed930af1ae0340d, torch
    # sum(p.numel()) and fvcore GMACs at 224 (fvcore skips the FFTs and the complex filter product, which the
    # paper's FLOPs include: README Ti 1.3, XS 2.8 (paper 2.9), S 4.5, B 7.9, H-Ti 2.0, H-S 4.5, H-B 8.4 GFLOPs; the
    # GFNet-H values are below fvcore's, which the FFTs cannot explain)
    "gfnet_ti_224": (7.51, 1.28),
    "gfnet_xs_224": (15.99, 2.84),
    "gfnet_s_224": (24.87, 4.47),
    "gfnet_b_224": (43.12, 7.91),
    "gfnet_h_ti_224": (15.09, 2.05),
    "gfnet_h_s_224": (32.16, 4.6),
    "gfnet_h_b_224": (53.74, 8.55),
    # zoo: cf_vit
    # CF-ViT: ChenMnZ/CF-ViT deit/models_deit.py @HEAD (cf_deit_small, 7x7 and 9x9 coarse grids), torch
    # sum(p.numel()) and fvcore GMACs of both stages with informative selection (fvcore also counts the nearest
    # upsampling of the reused features, 196 x 384 = 7.5e-5 GMACs at 224, which jaxvit's counter does not); the
    # paper: DeiT-S 4.0 GFLOPs (7x7)
    "cf_deit_small_224": (23.25, 4.02),
    "cf_deit_small_288": (23.31, 6.77),  # at 288
    # zoo: hire_mlp
    # Hire-MLP: ggjy/Hire-Wave-MLP.pytorch mlp_based/hire_mlp.py @7ef7ddd0, torch sum(p.numel()) and fvcore GMACs at
    # 224 (BatchNorms included; the rolls, pads and split-attention products are not counted); README: 18M / 2.1G,
    # 33M / 4.2G, 58M / 8.1G, 96M / 13.4G
    "hire_mlp_tiny": (18.04, 2.15),
    "hire_mlp_small": (33.11, 4.24),
    "hire_mlp_base": (58.23, 8.13),
    "hire_mlp_large": (95.72, 13.44),
    # zoo: attention_reuse
    # SkipAt: Qualcomm-AI-research/skip-attention model/vit_skipat.py + model/uformer_utils.py
    # @a7a312dacf55cfd65e0a1e412621bd92d80e9b9b (skipat_{tiny,small,base}_patch16_224: blocks 3..8 skipped). fvcore
    # GMACs at 224 equal jaxvit's (with timm 0.5.4's explicit attention products). Params: the official
    # sum(p.numel()) also counts the norm1 + attn the skipped blocks build but never call (6.67M / 25.72M /
    # 100.98M); the parameters its forward uses, counted here, are equal. The paper's (arXiv:2301.02240) table was
    # not found in the local reference corpus; the README gives top-1 and throughput only.
    "deit_tiny_skipat_patch16_224": (5.77, 1.18),
    "deit_small_skipat_patch16_224": (22.16, 4.45),
    "deit_base_skipat_patch16_224": (86.79, 17.25),
    # ReViT: ADiko1997/ReViT model/revit_model.py + model/attention.py (config/config-ReViT-B.yaml)
    # @2188c96376b63c6fadb8d73ab2823092f4242b73, torch sum(p.numel()) and fvcore GMACs at 224, equal; README:
    # ReViT-B 86M / 17.5G. The DeiT-S variant is the official code with cls_embed_on=True at DeiT-S size (DeiT-S +
    # alpha; no published number)
    "deit_small_revit_patch16_224": (22.05, 4.61),
    "revit_base_patch16_224": (86.57, 17.49),
    # zoo: pvt
    # PVT v1: whai362/PVT classification/pvt.py (branch v2 @57e2dfaa5a46f9050d76f306a4fcd9a7c061f520), torch
    # sum(p.numel()) and fvcore GMACs at 224, equal to the unit (fvcore's 4 per element of the identity bilinear
    # resizes of pos_embed2-4, 7.5e-4 GMACs, included: without them pvt_medium would round to 6.68). README / paper:
    # 13.2M / 1.9G, 24.5M / 3.8G, 44.2M / 6.7G, 61.4M / 9.8G ("GFLOPs" = MACs), all these rounded except Large's
    # 9.8 for 9.85 (truncated?); the repo's get_flops.py formula for attention's products (no class token) gives 3e-4
    # GMACs less, still 9.85, so the paper's 9.8 is not reproduced
    "pvt_tiny": (13.23, 1.94),
    "pvt_small": (24.49, 3.83),
    "pvt_medium": (44.21, 6.69),
    "pvt_large": (61.37, 9.85),
    # zoo: biformer
    # BiFormer: rayleizhu/BiFormer models/biformer.py + ops/bra_legacy.py @1697bbbeafb8680524898f1dcaac10defd0604be,
    # torch sum(p.numel()) and fvcore GMACs at 224 (equal to the last digit: 13142760 / 2228044160 for T); README
    # 13.1M / 2.2G, 25.5M / 4.5G, 56.8M / 9.8G (fvcore's 2.23, 4.49, 9.79 rounded)
    "biformer_tiny": (13.14, 2.23),
    "biformer_small": (25.54, 4.49),
    "biformer_base": (56.8, 9.79),
    # zoo: litv2
    # LITv2: ziplab/LITv2 classification/models/litv2.py + configs/litv2-*.yaml
    # @7501c8662991cad6db780b61fac0886b56a76588, torch sum(p.numel()) and fvcore GMACs at 224 with the DTM deformable
    # conv counted as the 2x2 conv it is (a pure-torch DeformConv2dPack whose product is an einsum; fvcore rounds
    # einsum counts, -8256 MACs on S; it skips the compiled DCN op, which would leave 3.56 / 7.31 / 12.89); the
    # official flops() gives 3.73 / 7.48 / 13.19; README 28M / 3.7G, 49M / 7.5G, 87M / 13.2G
    "litv2_small": (27.84, 3.74),
    "litv2_medium": (48.83, 7.48),
    "litv2_base": (86.52, 13.2),
    # zoo: cyclemlp
    # CycleMLP: ShoufaChen/CycleMLP cycle_mlp.py @4e062a03e875d8dc4fbdd5dec96a918494705d38, torch sum(p.numel()) (the
    # fixed `offset` buffers are not parameters) and the repo's `main.py --flops` count: fvcore with
    # torchvision::deform_conv2d counted by its `utils.sfc_flop_jit` as the 1x1 conv it is (C_in x C_out x H x W), at
    # 224; jaxvit's shift + matmul counts the same. The split-attention mean / softmax are free. README: 15M / 2.1G,
    # 27M / 3.9G, 38M / 6.9G, 52M / 10.1G, 76M / 12.3G (published_numbers.md's "CycleMLP-T" row is AS-MLP-T's).
    "cyclemlp_b1": (15.16, 2.13),
    "cyclemlp_b2": (26.80, 3.89),
    "cyclemlp_b3": (38.39, 6.85),
    "cyclemlp_b4": (51.80, 10.06),
    "cyclemlp_b5": (75.75, 12.27),
    # zoo: as_mlp
    # AS-MLP: svip-lab/AS-MLP models/as_mlp.py @dd1eb4f768f46fdf7c8522fd535ea9e15f664fae (configs
    # as_*_patch4_shift5_224.yaml), torch sum(p.numel()) and fvcore GMACs at 224 (1x1 convs, GroupNorm 5 / element;
    # the axial shifts are free). README: 28M / 4.4G, 50M / 8.5G, 88M / 15.2G.
    "as_mlp_tiny": (28.28, 4.38),
    "as_mlp_small": (49.59, 8.56),
    "as_mlp_base": (87.75, 15.19),
    # zoo: s2_mlp
    # S2-MLP / S2-MLPv2: no official code (Baidu); jaxvit's sum of parameters and count_macs at 224 (patch embeddings,
    # linears, LayerNorms; the shifts and split attention's weighting are free). Sources: S2-MLP (arXiv:2106.07477)
    # Sec. 3 / Fig. 1 / Algorithm 1 and its Table (patch 16, hidden 768 / 384, depth 12 / 36, ratio 4: 71M / 14.0B,
    # 51M / 10.5B FLOPs = MACs); S2-MLPv2 (arXiv:2108.01072) Sec. 3 (3C expansion, shifts S1 / S2 / identity,
    # split attention) and its Table (Small 25M / 6.9B, Medium 55M / 16.3B); unstated details from the unofficial
    # liuruiyang98/Jittor-MLP models_pytorch/s2_mlp_v1.py, s2_mlp_v2.py @5e27ae3 (LN eps 1e-5, biases, stride-2
    # convolution merging between v2 stages, no final norm, split attention without biases and summed, k-major),
    # whose logits jaxvit matches (tests/models/test_s2_mlp.py). v2's stage widths / depths are ViP-Small/7 and
    # ViP-Medium/7's (houqb/VisionPermutator models/vip.py), the pyramid the v2 paper says it adopts; its split
    # attention hidden width C/4 (ViP's reweight MLP; Jittor-MLP uses C, giving 31.75M / 70.01M) reproduces both v2
    # counts. Residual gap: S2-MLP's FLOPs match (14.01, 10.49) but its parameters do not: the paper's architecture
    # gives 72.24M / 53.92M (the Jittor-MLP model counts the same), not 71M / 51M. A block-level change would move
    # the FLOPs; leaving out the FLOP-cheap patch embedding and head gives 70.88M (~71M) for wide but 53.24M for
    # deep, so no one counting convention explains both: the paper's parameter column is taken as miscounted
    "s2mlp_wide_224": (72.24, 14.01),
    "s2mlp_deep_224": (53.92, 10.49),
    "s2mlpv2_small_224": (25.11, 6.93),
    "s2mlpv2_medium_224": (55.27, 16.34),
    # zoo: cvt
    # CvT: microsoft/CvT lib/models/cls_cvt.py + experiments/imagenet/cvt/*.yaml @ f851e68 (f851e681966390779b7138
    # 0d2600b52360ff4fe1); params = official sum(p.numel()) exactly, GMACs = fvcore on the official model at 2
    # decimals (README: 20M / 4.5G, 16.3G; 32M / 7.1G, 24.9G; W24 277M / 193.2G: fvcore gives 194.49 for W24).
    "cvt_13_224": (20.00, 4.58),
    "cvt_13_384": (20.00, 16.32),
    "cvt_21_224": (31.62, 7.21),
    "cvt_21_384": (31.62, 24.93),
    "cvt_w24_384": (277.20, 194.49),
    # zoo: cpvt
    # CPVT (jaxvit/models/vit.py): no CPVT model code was released (Meituan-AutoML/CPVT @80f2387 holds a README; the
    # PEG is `PosCNN` in Meituan-AutoML/Twins gvt.py @c1ff671), so these are jaxvit's sum of parameters and count_macs
    # of the paper's description (DeiT without pos_embed, 3x3 depthwise PEGs with bias), equal to fvcore on timm's
    # ViT + Twins' `PosCNN` (tests/models/test_cpvt.py). Published (arXiv:2102.10882; iRPE arXiv:2107.14222, MMACs):
    # CPVT-Ti(0-5) 6M / 1.262, CPVT-S(0-5) 23M / 4.616, CPVT-B 88M / 17.6, the GAP rows 6M / 23M. The GMACs agree up to
    # the counter: iRPE's own DeiT-Ti / DeiT-S are 1.261 / 4.613 where fvcore (and timm) count 1.258 / 4.608, and six
    # 3x3 depthwise PEGs add 0.002 / 0.004; at 2 decimals CPVT-S(0-5) is 4.61 here for the published 4.616.
    # Parameters: a PEG holds 10 C (1.9k / 3.8k / 7.7k for Ti / S / B) and replaces DeiT's pos_embed (38k / 76k / 151k),
    # so the paper's 23M (CPVT-S) and 88M (CPVT-B) against its 22M / 86M for DeiT-S / -B do not follow from its
    # description; a 1x1 convolution in each PEG would add 0.9M (S, six PEGs) but also 0.17 GMACs, which 4.616 rules out
    "cpvt_ti_224": (5.68, 1.26),
    "cpvt_s_224": (21.98, 4.61),
    "cpvt_b_224": (86.42, 17.58),
    "cpvt_ti_0to5_224": (5.69, 1.26),
    "cpvt_s_0to5_224": (22.00, 4.61),
    "cpvt_ti_gap_224": (5.69, 1.25),
    "cpvt_s_gap_224": (22.00, 4.59),
    # zoo: cswin
    # CSWin: microsoft/CSWin-Transformer models/cswin.py @ f111ae2 (f111ae2f771df32006e7afd7916835dd67d4cb9d); params =
    # official sum(p.numel()) exactly, GMACs = fvcore FlopCountAnalysis of the official model at its img_size (both equal
    # to the integer, tests/models/test_cswin.py). README: T 23M / 4.3G, S 35M / 6.9G, B 78M / 15.0G, B-384 47.0G,
    # L 173M / 31.5G, L-384 96.8G. fvcore on the released code gives 6.83 for S and 33.19 / 102.06 for L; the repo does
    # not say how its S / L FLOPs were counted (heads do not change these counts, so L's cannot come from its head split).
    "cswin_tiny_224": (22.32, 4.34),
    "cswin_small_224": (34.64, 6.83),
    "cswin_base_224": (77.38, 15.00),
    "cswin_large_224": (173.26, 33.19),
    "cswin_base_384": (77.38, 47.08),
    "cswin_large_384": (173.26, 102.06),
    # zoo: avit
    # A-ViT: NVlabs/A-ViT timm/models/act_vision_transformer.py + models_act.py @ 120c9cb (120c9cb90acf86828f1c61dd42c0
    # 8722aa7173c7); no parameters beyond DeiT's (official sum(p.numel()) = DeiT-T's / DeiT-S's), GMACs = the static
    # count, DeiT's: masked halting removes nothing (official issue #2). The README's 0.8 / 3.6 GFLOPs (A-ViT-T / -S)
    # are the expected cost of the trained halting on ImageNet val (jaxvit: `out["macs"]` per image); the checkpoints
    # (Google Drive) are not here, so those two numbers are not reproduced.
    "avit_tiny_patch16_224": (5.72, 1.26),
    "avit_small_patch16_224": (22.05, 4.61),
    # zoo: adavit
    # AdaViT: MengLcool/AdaViT models/ada_t2t_vit.py + ada_transformer_block.py @ 9857f92 (9857f92c8428045e01a8d988eab50
    # 60b1ac4a18b), `--ada-head --ada-layer --ada-token-with-mlp`; params = official sum(p.numel()) exactly (5,730,347 /
    # 22,089,164: DeiT + the decision heads), GMACs = the static count (everything kept: DeiT + 1 MMAC of decision
    # heads). README: Ada-DeiT-S 2.3 G (paper 2.25) = the official FLOPs dictionary summed over its trained decisions
    # (tests/dynamic/test_adavit.py reproduces that dictionary); the checkpoint is not here, so not reproduced.
    "adavit_deit_tiny_patch16_224": (5.73, 1.26),
    "adavit_deit_small_patch16_224": (22.09, 4.61),
}
