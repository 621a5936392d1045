"""RoPE for vision (arXiv:2403.13298): relative positions, prefix tokens, initialisation, the ViT's pos_embed."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers.rope import RotaryEmbedding, apply_rope, magnitudes, patch_coords


@pytest.mark.parametrize("kind", ["axial", "mixed"])
def test_rotated_dot_products_depend_only_on_the_offset(kind):
  """The same query and key at every patch: q_m . k_n after rotation is a function of (x_m - x_n, y_m - y_n)."""
  grid, heads, d = (4, 5), 2, 16
  rope = RotaryEmbedding(kind, grid, heads, d, 10.0)
  sin, cos = rope.apply(rope.init(jax.random.key(0)))
  q, k = (jnp.broadcast_to(jax.random.normal(jax.random.key(i), (1, heads, 1, d)), (1, heads, 20, d)) for i in (1, 2))
  dots = np.asarray(jnp.einsum("bhqd,bhkd->bhqk", apply_rope(q, sin, cos), apply_rope(k, sin, cos)))[0]
  coords = patch_coords(grid)
  by_offset = {}
  for m in range(20):
    for n in range(20):
      by_offset.setdefault(tuple(coords[m] - coords[n]), []).append(dots[:, m, n])
  for values in by_offset.values():
    np.testing.assert_allclose(values, np.broadcast_to(values[0], np.shape(values)), atol=1e-4)
  assert len({round(float(v[0][0]), 3) for v in by_offset.values()}) > 20  # and the offsets do matter


def test_prefix_tokens_are_not_rotated_and_norms_are_kept():
  sin, cos = RotaryEmbedding("axial", (2, 2), 1, 8, 100.0).apply({})
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 8))  # 1 prefix token + 4 patches
  y = apply_rope(x, sin, cos)
  np.testing.assert_array_equal(y[:, :, 0], x[:, :, 0])
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(y[:, :, 1], x[:, :, 1], atol=1e-6)  # the patch at (0, 0) turns by 0


def test_axial_turns_the_first_half_with_x_and_the_rest_with_y():
  sin, _ = RotaryEmbedding("axial", (2, 3), 1, 16, 100.0).apply({})
  angles = np.arcsin(np.asarray(sin[0]))  # small angles: x, y < 3 and frequencies <= 1
  row_step, col_step = angles[3] - angles[0], angles[1] - angles[0]  # patch (1, 0) and (0, 1) against (0, 0)
  np.testing.assert_allclose(col_step[:8], np.repeat(magnitudes(16, 100.0), 2), rtol=1e-5)
  np.testing.assert_allclose(col_step[8:], 0.0, atol=1e-7)
  np.testing.assert_allclose(row_step[8:], np.repeat(magnitudes(16, 100.0), 2), rtol=1e-5)


def test_mixed_frequencies_start_at_the_axial_magnitudes_turned_per_head():
  rope = RotaryEmbedding("mixed", (2, 2), 3, 16, 10.0)
  freqs = np.asarray(nn.meta.unbox(rope.init(jax.random.key(0)))["params"]["freqs"])  # [2, H, d / 2]
  np.testing.assert_allclose(np.hypot(freqs[0], freqs[1]), np.broadcast_to(np.tile(magnitudes(16, 10.0), 2), (3, 8)),
                             rtol=1e-5)
  assert len({round(float(np.arctan2(freqs[1, h, 0], freqs[0, h, 0])), 4) for h in range(3)}) == 3


def test_rope_vit_scans_like_the_loop_and_runs_in_bfloat16():
  model = jaxvit.create_model("vit_small_patch16_rope_mixed_ape_224", img_size=32, depth=2, num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = nn.meta.unbox(model.init(jax.random.key(1), x))
  from jaxvit.convert.mapping import loop_to_scan
  scanned = {"params": loop_to_scan(variables["params"])}
  np.testing.assert_allclose(model.clone(scan=True).apply(scanned, x)[0], model.apply(variables, x)[0], atol=1e-5)
  logits, _ = model.clone(dtype=jnp.bfloat16).apply(variables, x)
  assert logits.dtype == jnp.bfloat16 and np.isfinite(np.asarray(logits, np.float32)).all()


@pytest.mark.parametrize("overrides,match", [
    (dict(pos_embed="rope_polar"), "pos_embed='rope_polar'; accepted: one of .*'rope_axial', 'rope_mixed'"),
    (dict(pos_embed="learn+sincos"), "pos_embed='learn\\+sincos'"),
    (dict(pos_embed="rope_axial+rope_mixed"), "pos_embed='rope_axial\\+rope_mixed'"),
    (dict(pos_embed="rope_axial", embed_dim=36, num_heads=6), "head dim .* divisible by 4"),
    (dict(pos_embed="rope_axial", reduction=dict(kind="tome", r=4)), "reduction=.*None with a rotary pos_embed"),
])
def test_bad_position_encoding_is_one_clear_error(overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("vit_small_patch16_224", **overrides)
