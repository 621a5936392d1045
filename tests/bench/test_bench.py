import os

import jax
import jax.numpy as jnp
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs, jaxpr_macs
from jaxvit.bench.run import benchmark, expand, format_table, parse_reductions


def vit_macs(n, d, depth, patch_dim, classes):
  """Per image: patch embedding, per block qkv + proj + MLP (12 N D^2) + QK^T and AV (2 N^2 D),
  the head, and fvcore's 5 per element for each of the 2 depth + 1 LayerNorms."""
  tokens = n + 1
  return ((n * patch_dim * d) + depth * (12 * tokens * d * d + 2 * tokens * tokens * d) + d * classes
          + (2 * depth + 1) * 5 * tokens * d)


def test_count_macs_matches_the_formula():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=64, num_classes=10)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  got = count_macs(model, variables, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert got["total"] == vit_macs(16, 192, 12, 16 * 16 * 3, 10)


def test_jaxpr_macs_counts_scan_length_and_convolutions():
  def f(x, w, image, kernel):
    x, _ = jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)
    return x, jax.lax.conv(image, kernel, (1, 1), "VALID")  # NCHW [1, 2, 5, 5] * OIHW [4, 2, 3, 3]
  jaxpr = jax.make_jaxpr(f)(jnp.ones((3, 4)), jnp.ones((4, 4)), jnp.ones((1, 2, 5, 5)), jnp.ones((4, 2, 3, 3)))
  assert jaxpr_macs(jaxpr) == 5 * (3 * 4 * 4) + (1 * 4 * 3 * 3) * (2 * 3 * 3)


def test_count_macs_refuses_scan():
  with pytest.raises(ValueError, match="scan=False"):
    model = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, scan=True)
    count_macs(model, None, jnp.ones((1, 32, 32, 3)))


def test_benchmark_rows_and_table():
  rows = benchmark(["deit_tiny_[dp]*"], batch=8, img_size=32, runs=1, matmul_n=256, log=lambda _: None)
  assert [r["model"] for r in rows] == ["deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224"]
  row = rows[1]
  assert row["devices"] == jax.local_device_count() == 8
  assert row["images_per_s"] > 0 and row["latency_ms"] > 0 and 0 < row["mfu_matmul"]
  assert row["gmacs"] == vit_macs(4, 192, 12, 768, 1000) / 1e9
  assert round(row["params_m"], 2) == 5.68  # 5.72M at 224 minus (196 - 4) x 192 position-embedding values
  table = format_table(rows)
  assert table.count("\n") == 3 and "deit_tiny_patch16_224 | 32 | 8 | 5.68" in table


def test_benchmark_measures_each_reduction_against_the_unreduced_model(tmp_path):
  rows = benchmark(["deit_tiny_patch16_224"], batch=8, img_size=64, runs=1, matmul_n=256,
                   reductions=parse_reductions("tome:r=4,tome:r=2,prop_attn=False"), log=lambda _: None)
  assert [r["model"] for r in rows] == ["deit_tiny_patch16_224", "deit_tiny_patch16_224 + tome:r=4",
                                        "deit_tiny_patch16_224 + tome:r=2,prop_attn=False"]
  plain, r4, r2 = rows
  assert "speedup" not in plain and r4["speedup"] == r4["images_per_s"] / plain["images_per_s"]
  assert plain["params_m"] == r4["params_m"] and r2["gmacs"] > r4["gmacs"]
  assert r4["gmacs"] < plain["gmacs"]
  from jaxvit.bench.report import write_dynamic_report
  text = write_dynamic_report(rows, str(tmp_path / "docs" / "dynamic.md"), "python -m jaxvit.bench ...")
  assert (tmp_path / "docs" / "dynamic.md").read_text() == text and (tmp_path / "docs" / "dynamic.png").stat().st_size
  assert "| deit_tiny_patch16_224 + tome:r=4 |" in text and f"{r4['speedup']:.2f}x" in text


def test_bad_arguments_are_clear():
  with pytest.raises(ValueError, match="expected kind:key=value"):
    parse_reductions("r=13")
  with pytest.raises(ValueError, match="matches no registered model"):
    expand(["nope_*"])
  with pytest.raises(ValueError, match="did you mean"):
    benchmark(["deit_tiny"], log=lambda _: None)
  with pytest.raises(ValueError, match="--batch=6 must be a multiple of the 8 local devices"):
    benchmark(["deit_tiny_patch16_224"], batch=6, log=lambda _: None)
  from jaxvit.bench.__main__ import main
  with pytest.raises(SystemExit, match="unknown model family 'swim'"):
    main(["--family", "swim"])


def test_benchmark_train_rows_and_profile():
  from jaxvit.bench.profile import format_profile
  from jaxvit.bench.run import TRAIN_COLUMNS, benchmark_train
  rows = benchmark_train(["deit_tiny_patch16_224"], batch=8, img_size=32, runs=1, matmul_n=256, profile=True,
                         log=lambda _: None)
  row = rows[0]
  assert row["steps_per_s"] > 0 and 0 < row["mfu_matmul"] < 1.5
  assert "| deit_tiny_patch16_224 | 32 | 8 | 8 |" in format_table(rows, TRAIN_COLUMNS)
  ops = {r["op"]: r for r in row["profile"]}
  fc1 = [op for op in ops if op.endswith("encoder/blocks_i/mlp/fc1/dot_general")]  # 12 blocks folded into one row
  assert fc1 and ops[fc1[0]]["calls"] == 12 and all(r["ms"] > 0 for r in row["profile"])
  assert "per step and device" in format_profile(row["profile"])


@pytest.mark.parity
def test_benchmark_compares_with_timm():
  from jaxvit.bench.run import benchmark_train
  rows = benchmark_train(["deit_tiny_patch16_224"], batch=8, img_size=32, runs=1, matmul_n=256, compare="timm",
                         log=lambda _: None)
  assert rows[0]["timm_steps_per_s"] > 0 and rows[0]["vs_timm"] == rows[0]["steps_per_s"] / rows[0]["timm_steps_per_s"]
  rows = benchmark(["deit_tiny_patch16_224"], batch=8, img_size=32, runs=1, matmul_n=256, compare="timm",
                   log=lambda _: None)
  assert rows[0]["timm_images_per_s"] > 0 and "jaxvit/timm" in format_table(rows)


def test_profile_names_ops_by_their_jax_op_with_blocks_folded():
  from jaxvit.bench.profile import op_names
  hlo = ('  %all-reduce.154 = (f32[192]{0}, f32[3]{0}) all-reduce(%a, %b), metadata={op_name="x/blocks_1/a:y/b"}\n'
         '  %ynn_fusion.3 = f32[1576,192]{1,0} fusion(%a), metadata={op_name="jit(step)/jvp(VT)/blocks_3/fc1/dot"}\n')
  assert op_names(hlo) == {"all-reduce.154": ("tuple", "all-reduce of 2 ops"),
                           "ynn_fusion.3": ("f32[1576,192]", "jvp(VT)/blocks_i/fc1/dot")}


@pytest.mark.parity
def test_components_report_measures_models_against_timm_and_the_mixer_scaling(tmp_path):
  from jaxvit.bench.components import PUBLISHED_TOP1, run_components_report, scaling_options, scaling_variants
  from jaxvit.layers.token_mixer import MIXERS
  from jaxvit.models.vit import POS_EMBEDS
  assert {"swin_tiny_patch4_window7_224", "maxvit_tiny_tf_224", "vit_base_patch16_rope_mixed_224"} <= set(PUBLISHED_TOP1)
  # every mixer (learned position embedding) and attention with every other position encoding, at 2 sizes
  assert len(scaling_variants()) == 2 * (len(MIXERS) + len(POS_EMBEDS) - 1) == 2 * len(scaling_options())
  # measured here: three of them (every option builds: tests/layers/test_pos_embed.py)
  options = [("attention", "learn"), ("pooling", "learn"), ("attention", "fire")]
  path = str(tmp_path / "components.md")
  rows, scaling = run_components_report(path, batch=8, scaling_batch=8, runs=1,
                                        models=["vit_small_patch16_rope_224", "gfnet_ti_224"],
                                        scaling_sizes=(32, 64), scaling_options=options,
                                        scaling_backbone=dict(depth=1, embed_dim=64, num_heads=2),
                                        log=lambda _: None)
  assert rows[0]["top1"] == 81.222 and rows[0]["timm_images_per_s"] > 0
  assert rows[1]["top1"] == 74.6 and "timm_images_per_s" not in rows[1]  # timm lacks GFNet: measured alone
  by_label = {r["model"]: r for r in scaling}
  attention = by_label["attention / learn @64"]["gmacs"] / by_label["attention / learn @32"]["gmacs"]
  pooling = by_label["pooling / learn @64"]["gmacs"] / by_label["pooling / learn @32"]["gmacs"]
  assert attention > pooling  # 4 -> 16 tokens: attention's QK^T and AV grow quadratically
  assert len(scaling) == 6 and by_label["attention / fire @64"]["gmacs"] > by_label["attention / learn @64"]["gmacs"]
  text = open(path).read()
  assert "| vit_small_patch16_rope_224 | 224 |" in text and "| pooling / learn @64 | 64 | 16 |" in text
  assert all(os.path.getsize(tmp_path / png) > 0 for png in ("components.png", "mixer_scaling.png"))


@pytest.mark.parametrize("vendor, family, flags, per_cycle", [
    ("AuthenticAMD", 25, "fpu sse2 avx2 fma avx512f avx512bw", 32),  # Zen 4: 512-bit FMAs on two 256-bit units
    ("AuthenticAMD", 26, "fpu sse2 avx2 fma avx512f", 64),  # Zen 5: full-width AVX-512
    ("AuthenticAMD", 23, "fpu sse2 avx2 fma", 32),  # Zen 2: AVX2 + FMA
    ("GenuineIntel", 6, "fpu sse2 avx2 fma avx512f", 64),
    ("GenuineIntel", 6, "fpu sse2 avx", 16)])
def test_flops_per_cycle_reads_the_vector_units_from_cpuinfo(vendor, family, flags, per_cycle):
  from jaxvit.bench.measure import flops_per_cycle
  info = f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nflags\t\t: {flags}\n"
  assert flops_per_cycle(info) == per_cycle
