"""ResNet / RegNetY: the model contract (stage maps, pre-logits, batch_stats) and clear config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit


@pytest.mark.parametrize("name,widths,dtype", [("resnet10t", (64, 128, 256, 512), jnp.float32),
                                               ("regnety_002", (24, 56, 152, 368), jnp.bfloat16)])
def test_outputs_stage_maps_and_takes_any_size(name, widths, dtype):
  model = jaxvit.create_model(name, num_classes=0, depths=(1, 1, 1, 1), dtype=dtype)
  x = jnp.ones((2, 72, 40, 3))  # not the reference size, not square
  (pooled, out), _ = jax.jit(lambda x: model.init_with_output(jax.random.key(0), x))(x)
  ceil = lambda n, i: -(-n // 2 ** (i + 2))  # strided convs and pools round up, as torch's with padding
  assert [out[f"stage{i}"].shape for i in range(4)] == [(2, ceil(72, i), ceil(40, i), w) for i, w in enumerate(widths)]
  assert pooled.shape == out["pre_logits"].shape == (2, model.num_features) and pooled.dtype == dtype


def test_train_mode_updates_batch_stats_and_eval_reads_them():
  model = jaxvit.create_model("resnet10t", num_classes=3, img_size=32, depths=(1, 1, 1, 1))
  x = 3.0 + jax.random.normal(jax.random.key(0), (4, 32, 32, 3))

  @jax.jit
  def run(x):
    variables = model.init(jax.random.key(0), x)
    _, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return new, model.apply(variables, x)[1]["pre_logits"], model.apply({**variables, **new}, x)[1]["pre_logits"]

  new, before, after = run(x)
  assert not np.allclose(new["batch_stats"]["bn1"]["mean"], 0.0)
  assert not np.allclose(before, after)


@pytest.mark.parametrize("name,field,value,match", [
    ("resnet50", "stem_type", "deeper", "ResNet: stem_type='deeper'; accepted: \\('', 'deep', 'deep_tiered'\\)"),
    ("resnet18", "cardinality", 32, "cardinality, base_width=\\(32, 64\\); accepted: \\(1, 64\\) for block='basic'"),
    ("resnet50", "depths", (3, 4, 6), "depths=\\(3, 4, 6\\); accepted: four stage depths >= 1"),
    ("regnety_002", "group_sizes", (8, 8, 7, 8), "RegNet: group_sizes=\\(8, 8, 7, 8\\); accepted: divisors"),
    ("regnety_002", "drop_path_rate", 1.0, "drop_path_rate=1.0; accepted: \\[0, 1\\)"),
])
def test_bad_config_is_one_clear_error(name, field, value, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model(name, **{field: value})
