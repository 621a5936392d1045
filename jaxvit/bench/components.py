"""`python -m jaxvit.bench --report components`: the efficient-components page, `docs/components.md`.

Two measurements on this machine: every component model named by the survey's first pillar against timm
(params, GMACs, images/s, and the published ImageNet-1k top-1 with its source), plotted as images/s against
GMACs; and the token-mixer scaling ablation: one DeiT-S-sized backbone (width 384, 12 blocks, patch 16, average
pooling) with every `mixer=` and `pos_embed=` option at 224 and 448 input, so quadratic attention against
linear mixers shows as numbers and a plot (`docs/mixer_scaling.png`).
"""

import os

from jaxvit.bench.report import plot_speed
from jaxvit.bench.run import benchmark, format_table
from jaxvit.layers.token_mixer import MIXERS
from jaxvit.models.vit import POS_EMBEDS

_TIMM = "timm results-imagenet.csv"
# name -> (top-1 %, source): timm's evaluation of the released ImageNet-1k weights (`results/results-imagenet.csv`
# at aa4b585, the tag named), which the papers' own numbers match to their rounding; "-" where none were released.
PUBLISHED_TOP1 = {
    "vit_small_patch16_rope_224": (81.222, f"{_TIMM} (naver_in1k)"),
    "vit_small_patch16_rope_mixed_224": (81.252, f"{_TIMM} (naver_in1k)"),
    "vit_base_patch16_rope_224": (83.714, f"{_TIMM} (naver_in1k)"),
    "vit_base_patch16_rope_mixed_224": (83.806, f"{_TIMM} (naver_in1k)"),
    "crossvit_tiny_240": (73.352, f"{_TIMM} (in1k)"),
    "crossvit_9_240": (73.994, f"{_TIMM} (in1k)"),
    "crossvit_15_dagger_240": (82.302, f"{_TIMM} (in1k)"),
    "mixer_s16_224": (None, "no released weights"),
    "mixer_b16_224": (76.616, f"{_TIMM} (goog_in21k_ft_in1k); paper IN-1k only: 76.44"),
    "resmlp_12_224": (76.660, f"{_TIMM} (fb_in1k)"),
    "resmlp_24_224": (79.380, f"{_TIMM} (fb_in1k)"),
    "gmlp_ti16_224": (None, "no released weights; paper 72.3"),
    "gmlp_s16_224": (79.652, f"{_TIMM} (ra3_in1k)"),
    "tnt_s_patch16_224": (81.506, f"{_TIMM} (in1k)"),
    "volo_d1_224": (84.148, f"{_TIMM} (sail_in1k, token labelling)"),
    "poolformer_s12": (77.238, f"{_TIMM} (sail_in1k)"),
    "poolformer_s24": (80.294, f"{_TIMM} (sail_in1k)"),
    "swin_tiny_patch4_window7_224": (81.388, f"{_TIMM} (ms_in1k)"),
    "swin_small_patch4_window7_224": (83.228, f"{_TIMM} (ms_in1k)"),
    "pvt_v2_b0": (70.654, f"{_TIMM} (in1k)"),
    "pvt_v2_b1": (78.698, f"{_TIMM} (in1k)"),
    "pvt_v2_b2": (82.062, f"{_TIMM} (in1k)"),
    "pvt_v2_b2_li": (82.200, f"{_TIMM} (in1k)"),
    "twins_pcpvt_small": (81.116, f"{_TIMM} (in1k)"),
    "twins_svt_small": (81.694, f"{_TIMM} (in1k)"),
    "maxvit_tiny_tf_224": (83.426, f"{_TIMM} (in1k)"),
    "swiftformer_xs": (75.600, f"{_TIMM} (dist_in1k)"),
    "swiftformer_s": (78.462, f"{_TIMM} (dist_in1k)"),
    # models timm lacks: the official README's ImageNet-1k top-1 (measured without a timm comparison)
    "t2t_vit_7": (71.7, "yitu-opensource/T2T-ViT README"),
    "t2t_vit_14": (81.5, "yitu-opensource/T2T-ViT README"),
    "gfnet_ti_224": (74.6, "raoyongming/GFNet README"),
    "gfnet_xs_224": (78.6, "raoyongming/GFNet README"),
    "gfnet_s_224": (80.0, "raoyongming/GFNet README"),
    "hire_mlp_tiny": (79.7, "ggjy/Hire-Wave-MLP.pytorch README"),
    "pvt_tiny": (75.1, "whai362/PVT classification README"),
    "pvt_small": (79.8, "whai362/PVT classification README"),
    "cvt_13_224": (81.6, "microsoft/CvT README"),
    "cvt_21_224": (82.5, "microsoft/CvT README"),
    "cyclemlp_b1": (78.9, "ShoufaChen/CycleMLP README"),
    "as_mlp_tiny": (81.3, "svip-lab/AS-MLP README"),
    "biformer_tiny": (81.4, "rayleizhu/BiFormer README"),
    "litv2_small": (82.0, "ziplab/LITv2 README"),
    "deit_small_skipat_patch16_224": (80.0, "Qualcomm-AI-research/skip-attention README"),
    "revit_base_patch16_224": (82.4, "ADiko1997/ReViT README"),
    "cswin_tiny_224": (82.8, "microsoft/CSWin-Transformer README (paper: 82.7)"),
    "cpvt_ti_0to5_224": (73.4, "Chu et al. arXiv:2102.10882 (no official code)"),
    "cpvt_s_0to5_224": (80.5, "Chu et al. arXiv:2102.10882 (no official code)"),
    "cpvt_ti_gap_224": (74.9, "Chu et al. arXiv:2102.10882 (no official code)"),
    "cpvt_s_gap_224": (81.5, "Chu et al. arXiv:2102.10882 (no official code)"),
    "s2mlp_wide_224": (80.0, "Yu et al. arXiv:2106.07477 (no official code)"),
    "s2mlp_deep_224": (80.7, "Yu et al. arXiv:2106.07477 (no official code)"),
}
COMPONENT_COLUMNS = (("model", "model", "{}"), ("img_size", "res", "{}"), ("params_m", "params (M)", "{:.2f}"),
                     ("gmacs", "GMACs", "{:.2f}"), ("images_per_s", "img/s", "{:.1f}"),
                     ("timm_images_per_s", "timm img/s", "{:.1f}"), ("vs_timm", "jaxvit/timm", "{:.2f}x"),
                     ("top1", "top-1 (%)", "{:.1f}"), ("top1_source", "top-1 source", "{}"))
SCALING_COLUMNS = (("model", "mixer / pos_embed", "{}"), ("img_size", "res", "{}"), ("tokens", "tokens", "{}"),
                   ("params_m", "params (M)", "{:.2f}"), ("gmacs", "GMACs", "{:.2f}"),
                   ("images_per_s", "img/s", "{:.1f}"), ("ms_per_image", "ms/img", "{:.1f}"))
BACKBONE = dict(class_token=False, global_pool="avg")  # DeiT-S width, depth, heads; the pooling mixer needs no prefix


def scaling_options() -> list[tuple[str, str]]:
  """`(mixer, pos_embed)` pairs of the ablation: every mixer (learned position embedding), and attention with every
  other position encoding."""
  return [(m, "learn") for m in MIXERS] + [("attention", p) for p in POS_EMBEDS if p != "learn"]


def scaling_variants(sizes=(224, 448), options=None, **backbone) -> dict:
  """`{label: ("vit_small_patch16_224", overrides)}`: each `(mixer, pos_embed)` of `options` (default:
  `scaling_options()`) at each size (`backbone`: more overrides, e.g. a smaller depth)."""
  options = scaling_options() if options is None else options
  return {f"{mixer} / {pos} @{size}": ("vit_small_patch16_224", dict(BACKBONE, **backbone, mixer=mixer, pos_embed=pos,
                                                                     img_size=size))
          for size in sizes for mixer, pos in options}


def plot_scaling(rows, path: str):
  """GMACs and ms per image against token count, one line per mixer / position encoding (log-log)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  lines = {}
  for r in rows:
    lines.setdefault(r["model"].split(" @")[0], []).append(r)
  colours = plt.get_cmap("tab20")  # 20 distinct colours; attention's position encodings dashed
  for i, (label, points) in enumerate(lines.items()):
    points = sorted(points, key=lambda r: r["tokens"])
    style = "--" if label.startswith("attention / ") and not label.endswith("/ learn") else "-"
    for ax, key in zip(axes, ("gmacs", "ms_per_image")):
      ax.plot([p["tokens"] for p in points], [p[key] for p in points], marker="o", linestyle=style,
              color=colours(i % 20), label=label)
  for ax, title in zip(axes, ("GMACs per image", f"ms per image (batch {rows[0]['batch']})")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens (224 px: 196, 448 px: 784)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
  axes[1].legend(fontsize=7)
  fig.suptitle("token mixers on a DeiT-S-sized backbone: attention grows quadratically, the others linearly")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run_components_report(path: str = "docs/components.md", *, batch=16, scaling_batch=8, runs=3, models=None,
                          scaling_sizes=(224, 448), scaling_backbone=None, scaling_options=None,
                          command="python -m jaxvit.bench --report components", log=print):
  """Measures the component models (against timm) and the mixer scaling; writes `path` and two PNGs beside it.
  `models`, `scaling_sizes`, `scaling_backbone` (overrides) and `scaling_options` shrink it for a test."""
  from jaxvit.registry import is_model
  missing = [m for m in PUBLISHED_TOP1 if not is_model(m)] if models is None else []
  models = [m for m in PUBLISHED_TOP1 if is_model(m)] if models is None else models
  rows = benchmark(models, batch=batch, compare="timm", runs=runs, latency=False, log=log)
  for r in rows:
    r["top1"], r["top1_source"] = PUBLISHED_TOP1.get(r["model"], (None, "-"))
    if r["top1"] is None:
      del r["top1"]
  variants = scaling_variants(scaling_sizes, scaling_options, **(scaling_backbone or {}))
  scaling = benchmark([], batch=scaling_batch, runs=runs, latency=False, variants=variants, log=log)
  for r in scaling:
    r["tokens"] = (r["img_size"] // 16) ** 2
    r["model"] = r["model"].rsplit(" @", 1)[0] + f" @{r['img_size']}"
    r["ms_per_image"] = 1e3 / r["images_per_s"]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  folder = os.path.dirname(path)
  plot_speed(rows, os.path.join(folder, "components.png"), "efficient components: throughput against compute")
  plot_scaling(scaling, os.path.join(folder, "mixer_scaling.png"))
  slower = [r["model"] for r in rows if r.get("vs_timm", 1.0) < 1.0]
  r0 = rows[0]
  text = (f"# Efficient components: speed on this machine\n\nMeasured by `{command}` ({r0['backend']}, "
          f"{r0['devices']} devices, float32, matmul {r0['matmul_gflops']:.0f} GFLOP/s); images/s at batch "
          f"{r0['batch']}, median of {runs} timed runs; timm (PyTorch) on the same input and threads for the "
          f"models timm has.\n\n"
          f"{format_table(rows, COMPONENT_COLUMNS)}\n\n![images/s against GMACs](components.png)\n\n"
          f"Slower than timm here: {', '.join(slower) if slower else 'none'}.\n\n"
          + (f"Not in jaxvit yet: {', '.join(missing)}.\n\n" if missing else "") +
          f"## Token-mixer scaling\n\nOne DeiT-S-sized backbone (width 384, 12 blocks, patch 16, average pooling), "
          f"every `mixer=` (with a learned position embedding) and attention with every other `pos_embed=`, at "
          f"batch {scaling[0]['batch']}. From 196 to 784 tokens attention's GMACs grow by more than 4x (its "
          f"QK^T and AV are quadratic), the other mixers' by 4x at most.\n\n{format_table(scaling, SCALING_COLUMNS)}"
          f"\n\n![GMACs and time against tokens](mixer_scaling.png)\n")
  with open(path, "w") as f:
    f.write(text)
  return rows, scaling
