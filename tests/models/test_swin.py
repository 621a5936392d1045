"""Swin Transformer: window partition, the shifted-window mask and relative position index against naive
references, window attention against a per-window loop, other input sizes, config errors, bfloat16."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers.window_attention import (MASK_VALUE, WindowAttention, relative_position_index, shifted_window_mask,
                                            window_partition, window_reverse)
from jaxvit.models.swin import stage_windows


@pytest.mark.parametrize("shape,window", [((2, 8, 12, 3), (4, 3)), ((1, 7, 7, 5), 7), ((1, 6, 4, 2), (2, 2))])
def test_window_partition_round_trips_and_groups_windows(shape, window):
  x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
  wh, ww = (window, window) if isinstance(window, int) else window
  windows = np.asarray(window_partition(jnp.asarray(x), window))
  assert windows.shape == (shape[0], (shape[1] // wh) * (shape[2] // ww), wh * ww, shape[3])
  if shape[2] >= 2 * ww:  # the second window is the top row's second one
    np.testing.assert_array_equal(windows[:, 1], x[:, :wh, ww:2 * ww].reshape(shape[0], -1, shape[3]))
  np.testing.assert_array_equal(np.asarray(window_reverse(jnp.asarray(windows), window, shape[1], shape[2])), x)


def random_params(module, *args, **kwargs):
  """Params of `module.init`'s shapes filled from numpy (compiling a random init costs more than the forward)."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs)))["params"]
  rs = np.random.RandomState(0)
  return jax.tree.map(lambda t: (0.3 * rs.standard_normal(t.shape)).astype(t.dtype), shapes)


@pytest.mark.parametrize("wh,ww", [(7, 7), (3, 5), (1, 1)])
def test_relative_position_index_matches_naive(wh, ww):
  index = relative_position_index((wh, ww))
  cells = list(itertools.product(range(wh), range(ww)))
  offsets = {}
  for (a, (yq, xq)), (b, (yk, xk)) in itertools.product(enumerate(cells), repeat=2):
    offsets.setdefault((yq - yk, xq - xk), set()).add(int(index[a, b]))
  assert all(len(rows) == 1 for rows in offsets.values())  # one table row per offset ...
  assert sorted(r for rows in offsets.values() for r in rows) == list(range((2 * wh - 1) * (2 * ww - 1)))  # ... each
  assert index[0, 0] == (wh - 1) * (2 * ww - 1) + ww - 1 and index[0, -1] == 0  # (dy, dx) = (-(wh-1), -(ww-1)) -> 0


@pytest.mark.parametrize("grid,window,shift", [((8, 8), (4, 4), (2, 2)), ((14, 21), (7, 7), (3, 3)),
                                               ((6, 4), (3, 4), (1, 0))])
def test_shifted_window_mask_matches_brute_force(grid, window, shift):
  """A pair is allowed exactly when both tokens sit in the same region of the unrolled map: in the rolled map,
  their original positions are neighbours without wrapping around (the same cyclic window, no seam between)."""
  (h, w), (wh, ww), (sh, sw) = grid, window, shift
  mask = shifted_window_mask(grid, window, shift)
  rolled = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1)  # original (y, x) per cell
  rolled = np.roll(rolled, (-sh, -sw), axis=(0, 1))
  for wy, wx in itertools.product(range(h // wh), range(w // ww)):
    cells = rolled[wy * wh:(wy + 1) * wh, wx * ww:(wx + 1) * ww].reshape(-1, 2)
    for a, b in itertools.product(range(wh * ww), repeat=2):
      # the roll wrapped them apart iff their distance in the original map exceeds the window
      together = abs(cells[a][0] - cells[b][0]) < wh and abs(cells[a][1] - cells[b][1]) < ww
      assert mask[wy * (w // ww) + wx, a, b] == (0.0 if together else MASK_VALUE)
  assert (mask == MASK_VALUE).any() == (sh > 0 or sw > 0)


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_matches_per_window_reference(shift):
  """The layer equals a naive loop: roll, then softmax(q k^T / sqrt(d) + table[index] + mask) v window by window."""
  b, h, w, c, heads, m = 2, 8, 8, 12, 3, 4
  x = jax.random.normal(jax.random.key(0), (b, h, w, c))
  layer = WindowAttention(heads, m, shift)
  p = random_params(layer, x, train=False)
  y = np.asarray(jax.jit(lambda p, x: layer.apply({"params": p}, x, train=False))(p, x))
  xs = np.roll(np.asarray(x), (-shift, -shift), axis=(1, 2))
  bias = p["relative_position_bias_table"][relative_position_index(m)]  # [N, N, heads]
  mask = shifted_window_mask((h, w), m, shift) if shift else np.zeros((h * w // m ** 2, m * m, m * m))
  ref = np.zeros_like(xs)
  for i, (wy, wx) in enumerate(itertools.product(range(h // m), range(w // m))):
    tokens = xs[:, wy * m:(wy + 1) * m, wx * m:(wx + 1) * m].reshape(b, m * m, c)
    qkv = np.einsum("bnc,cthd->tbhnd", tokens, p["qkv"]["kernel"]) + p["qkv"]["bias"][:, None, :, None]
    logits = np.einsum("bhqd,bhkd->bhqk", qkv[0] / np.sqrt(c // heads), qkv[1]) + bias.transpose(2, 0, 1) + mask[i]
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bhkd,hdc->bqc", attn, qkv[2], p["proj"]["kernel"]) + p["proj"]["bias"]
    ref[:, wy * m:(wy + 1) * m, wx * m:(wx + 1) * m] = out.reshape(b, m, m, c)
  np.testing.assert_allclose(y, np.roll(ref, (shift, shift), axis=(1, 2)), atol=2e-5)


def test_stage_windows_clamp_to_small_grids_as_timm():
  # 224 px, S3-T windows: stage 2's window 14 equals its grid, so it neither shifts nor is larger than the grid
  assert stage_windows((56, 56), (7, 7, 14, 7), 4) == [((56, 56), (7, 7), (3, 3)), ((28, 28), (7, 7), (3, 3)),
                                                       ((14, 14), (14, 14), (0, 0)), ((7, 7), (7, 7), (0, 0))]
  # odd grids merge rounding up; per axis, a grid smaller than the window clamps it and turns its shift off
  assert stage_windows((28, 6), (7,) * 4, 4)[1:] == [((14, 3), (7, 3), (3, 0)), ((7, 2), (7, 2), (0, 0)),
                                                     ((4, 1), (4, 1), (0, 0))]
  assert stage_windows((16, 16), (7,) * 4, 4)[0] is None


def test_other_sizes_stage_maps_and_bfloat16():
  model = jaxvit.create_model("swin_tiny_patch4_window7_224", num_classes=0, img_size=(112, 56), depths=(1, 2, 1, 1),
                              embed_dim=32, num_heads=(1, 2, 4, 8), dtype=jnp.bfloat16)
  x = jnp.ones((2, 112, 56, 3))
  params = random_params(model, x)
  pooled, out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
  assert [out[f"stage{i}"].shape for i in range(4)] == [(2, 28, 14, 32), (2, 14, 7, 64), (2, 7, 4, 128),
                                                        (2, 4, 2, 256)]
  assert pooled.shape == out["pre_logits"].shape == (2, 256) and pooled.dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(pooled, np.float32)).all()
  table = params["layers_3"]["blocks_0"]["attn"]["relative_position_bias_table"]
  assert table.shape == ((2 * 4 - 1) * (2 * 2 - 1), 8)  # the clamped 4x2 window of the 4x2 grid


@pytest.mark.parametrize("field,value,match", [
    ("img_size", 64, r"SwinTransformer: img_size=64; accepted: sizes whose patch grid .* \(stage 0 is not\)"),
    ("img_size", 226, r"img_size=226; accepted: sizes divisible by patch_size=4"),
    ("window_size", (7, 7, 7), r"window_size=\(7, 7, 7\); accepted: an int >= 1 or one per stage \(4\)"),
    ("num_heads", (3, 6, 12), r"num_heads=\(3, 6, 12\); accepted: one head count per stage \(4\)"),
    ("num_heads", (5, 6, 12, 24), r"num_heads=\(5, 6, 12, 24\); accepted: divisors"),
    ("drop_path_rate", 1.0, r"drop_path_rate=1.0; accepted: \[0, 1\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("swin_tiny_patch4_window7_224", **{field: value})


def test_input_size_not_fitting_the_windows_is_a_clear_error():
  model = jaxvit.create_model("swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1, 1, 1))
  with pytest.raises(ValueError, match=r"input size=\(64, 64\); accepted: sizes whose patch grid"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))


@pytest.mark.parity
def test_clamped_windows_odd_merge_and_partial_shift_match_timm():
  """A non-square input: stage 1 shifts along H only, stage 2 merges an odd width and clamps its window to the
  7x4 grid, stage 3 to 4x2 (timm builds the same windows and masks for this img_size)."""
  pytest.importorskip("timm")
  from convert.test_parity import check_parity
  arch = dict(img_size=(112, 56), depths=(1, 2, 1, 1))
  check_parity("swin_tiny_patch4_window7_224", dict(arch, num_classes=10), depths=arch["depths"])
