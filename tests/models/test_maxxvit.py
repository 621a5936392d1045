"""MaxViT: block / grid partitions, the relative position biases against naive references, attention
locality of each partition, other input sizes, clear config errors, bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.layers.mbconv import DepthwiseConv, avg_pool2, conv
from jaxvit.layers.partition import grid_partition, grid_reverse, window_partition, window_reverse
from jaxvit.layers.rel_pos_bias import RelPosBias, RelPosBiasTf, RelPosMlp
from jaxvit.models.maxxvit_blocks import PartitionAttention

SMALL = dict(img_size=64, depths=(1, 1, 1, 1), embed_dim=(32, 32, 64, 64), head_hidden_size=64, stem_width=16)


def test_partitions_round_trip_and_group_the_right_pixels():
  x = jnp.arange(2 * 6 * 4 * 3, dtype=jnp.float32).reshape(2, 6, 4, 3)
  for split, merge in ((window_partition, window_reverse), (grid_partition, grid_reverse)):
    parts = split(x, (3, 2))
    assert parts.shape == (2 * 4, 6, 3)
    np.testing.assert_array_equal(merge(parts, (3, 2), (6, 4)), x)
  pos = lambda parts: (np.asarray(parts[..., 0]) % 72) // 3  # pixel index h * 4 + w of each token
  # windows: 3x2 neighbours; grid: a 3x2 grid spaced 6 / 3 = 2 rows and 4 / 2 = 2 columns apart
  np.testing.assert_array_equal(pos(window_partition(x, (3, 2)))[1], [2, 3, 6, 7, 10, 11])
  np.testing.assert_array_equal(pos(grid_partition(x, (3, 2)))[1], [1, 3, 9, 11, 17, 19])
  with pytest.raises(ValueError, match="not divisible by the grid partition size"):
    grid_partition(x, 4)


@pytest.mark.parametrize("size", [(2, 3), (3, 3)])
def test_relative_position_biases_match_naive_lookup(size):
  h, w = size
  coords = [(i, j) for i in range(h) for j in range(w)]
  tf = RelPosBiasTf(2, size)
  variables = nn.meta.unbox(tf.init(jax.random.key(0)))
  table = np.asarray(variables["params"]["relative_position_bias_table"])  # [heads, 2h - 1, 2w - 1]
  naive = np.array([[[table[n, kh - qh + h - 1, kw - qw + w - 1] for kh, kw in coords] for qh, qw in coords]
                    for n in range(2)])
  np.testing.assert_allclose(tf.apply(variables), naive, rtol=1e-6)

  swin = RelPosBias(2, size)
  variables = nn.meta.unbox(swin.init(jax.random.key(0)))
  table = np.asarray(variables["params"]["relative_position_bias_table"]).reshape(2 * h - 1, 2 * w - 1, 2)
  naive = np.array([[[table[qh - kh + h - 1, qw - kw + w - 1, n] for kh, kw in coords] for qh, qw in coords]
                    for n in range(2)])
  np.testing.assert_allclose(swin.apply(variables), naive, rtol=1e-6)

  mlp = RelPosMlp(2, size, hidden_dim=8)
  bias = mlp.apply(mlp.init(jax.random.key(0)))
  # the same (query - key) offset gives the same bias, opposite offsets generally differ
  assert bias.shape == (2, h * w, h * w)
  np.testing.assert_allclose(bias[:, 0, 1], bias[:, w, w + 1], rtol=1e-6)
  assert not np.allclose(bias[:, 0, 1], bias[:, 1, 0])


@pytest.mark.parametrize("partition,touched", [
    ("block", [(0, 0), (0, 1), (1, 0), (1, 1)]),  # the 2x2 window of pixel (0, 0)
    ("grid", [(0, 0), (0, 2), (2, 0), (2, 2)]),  # the 2x2 grid through pixel (0, 0), spaced 2 apart
])
def test_each_partition_mixes_exactly_its_group(partition, touched):
  layer = PartitionAttention(partition, (2, 2), rel_pos_type="bias_tf")
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 32))
  variables = layer.init(jax.random.key(1), x, 0.0)
  attn_only = lambda x: layer.apply(variables, x, 0.0) - x  # the residual branches, both position-wise after attn
  change = np.abs(attn_only(x.at[0, 0, 0, 0].add(1.0)) - attn_only(x)).max(axis=-1)[0]
  assert sorted(zip(*np.nonzero(change > 1e-6))) == touched


def test_other_input_sizes_and_clear_errors():
  model = jaxvit.create_model("maxvit_tiny_tf_224", num_classes=3, **SMALL)  # partition 64 // 32 = 2
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  for h, w in ((128, 64), (63, 61)):  # TF "SAME" padding rounds odd sizes up
    _, out = jax.jit(model.apply)(variables, jnp.ones((1, h, w, 3)))
    assert [out[f"stage{i}"].shape[1:3] for i in range(4)] == [(-(-h // 2 ** (i + 2)), -(-w // 2 ** (i + 2)))
                                                               for i in range(4)]
    assert out["logits"].shape == (1, 3) and out["pre_logits"].shape == (1, model.num_features)
  with pytest.raises(ValueError, match="stage3 map of 3x2, not divisible by partition_size=\\(2, 2\\)"):
    model.apply(variables, jnp.ones((1, 96, 64, 3)))
  rw = model.clone(padding="")  # torch padding: a 2x2 pool drops an odd edge, so odd maps cannot be pooled
  with pytest.raises(ValueError, match="stage0 input 31x32 is odd"):
    rw.apply(variables, jnp.ones((1, 62, 64, 3)))


@pytest.mark.parametrize("field,value,match", [
    ("img_size", 100, "img_size=100; accepted: sizes whose stage maps divide by the partition size \\(3, 3\\)"),
    ("rel_pos_type", "rope", "rel_pos_type='rope'; accepted: \\('bias_tf', 'bias', 'mlp'\\)"),
    ("embed_dim", (64, 128, 250, 512), "embed_dim=\\(64, 128, 250, 512\\); accepted: multiples of dim_head=32"),
    ("depths", (2, 2, 5), "depths=\\(2, 2, 5\\); accepted: 4 stage depths"),
    ("padding", "valid", "padding='valid'; accepted: \\('same', ''\\)"),
    ("drop_path_rate", 1.0, "drop_path_rate=1.0; accepted: \\[0, 1\\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("maxvit_tiny_tf_224", **{field: value})


def test_bfloat16_and_train_mode():
  model = jaxvit.create_model("maxvit_tiny_tf_224", num_classes=4, dtype=jnp.bfloat16, drop_path_rate=0.1,
                              rel_pos_type="mlp", init_values=1e-5, block_type="PM", **SMALL)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))

  @jax.jit
  def run(x):
    variables = model.init(jax.random.key(0), x)
    logits, _ = model.apply(variables, x)
    (train_logits, _), new = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                         rngs={"dropout": jax.random.key(1), "drop_path": jax.random.key(2)})
    return logits, train_logits, new

  logits, train_logits, new = run(x)
  assert logits.dtype == jnp.bfloat16 and np.isfinite(np.asarray(logits, np.float32)).all()
  assert np.isfinite(np.asarray(train_logits, np.float32)).all()
  assert not np.allclose(new["batch_stats"]["stem_norm1"]["mean"], 0.0)


def test_avg_pool_same_counts_the_padding_zero():
  x = jnp.ones((1, 3, 3, 1))
  np.testing.assert_allclose(avg_pool2(x, "same")[0, :, :, 0], [[1.0, 0.5], [0.5, 0.25]])
  assert avg_pool2(x, "").shape == (1, 1, 1, 1)


@pytest.mark.parametrize("padding", ["same", ""])
@pytest.mark.parametrize("stride,size", [(1, 8), (2, 8), (2, 7)])
def test_depthwise_conv_equals_grouped_convolution(padding, stride, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size + 1, 8))
  layer = DepthwiseConv(3, stride, padding)
  variables = layer.init(jax.random.key(1), x)
  np.testing.assert_allclose(layer.apply(variables, x), conv(8, 3, stride, 8, padding=padding).apply(variables, x),
                             atol=1e-5)
