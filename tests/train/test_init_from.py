"""`config.init_from`: converted timm weights or another run, adapted to a new resolution and head."""

import jax
import numpy as np
import pytest

import jaxvit
from jaxvit.train import init_from
from jaxvit.train.trainer import train_and_evaluate


def test_adapt_resamples_pos_embed_and_replaces_the_head():
  source = jaxvit.init_variables(jaxvit.create_model("deit_tiny_patch16_224", img_size=64))["params"]
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, num_classes=10, scan=True)
  target = jax.eval_shape(lambda: jaxvit.init_variables(model))["params"]
  params, notes = init_from.adapt(source, target, model)
  assert jax.tree.structure(params) == jax.tree.structure(target)
  assert params["pos_embed"].shape == (1, 1 + 4, 192) and params["head"]["kernel"].shape == (192, 10)
  np.testing.assert_array_equal(params["encoder"]["blocks"]["attn"]["qkv"]["kernel"][3],
                                source["encoder"]["blocks_3"]["attn"]["qkv"]["kernel"])
  assert sorted(notes) == ["head/bias replaced (1000,) -> (10,) (zeros)",
                           "head/kernel replaced (192, 1000) -> (192, 10) (zeros)",
                           "pos_embed resampled (1, 17, 192) -> (1, 5, 192)"]


def test_adapt_names_what_does_not_fit():
  source = jaxvit.init_variables(jaxvit.create_model("deit_tiny_patch16_224", img_size=32))["params"]
  model = jaxvit.create_model("deit_small_patch16_224", img_size=32)
  target = jax.eval_shape(lambda: jaxvit.init_variables(model))["params"]
  with pytest.raises(ValueError, match="config.init_from does not fit config.model: mis-shaped: encoder/blocks_0"):
    init_from.adapt(source, target, model)


def test_run_starts_from_another_runs_weights(tiny_config, tmp_path):
  train_and_evaluate(tiny_config, str(tmp_path / "first"))
  start = init_from.load_params(str(tmp_path / "first"))
  tiny_config.init_from = str(tmp_path / "first")
  tiny_config.total_steps, tiny_config.optimizer.lr = 1, 0.0  # no update: the weights must be the source's
  tiny_config.optimizer.warmup_steps = 0
  train_and_evaluate(tiny_config, str(tmp_path / "second"))
  got = init_from.load_params(str(tmp_path / "second"))
  for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b)


def test_init_from_nothing_is_an_error(tiny_config, tmp_path):
  tiny_config.init_from = str(tmp_path)
  with pytest.raises(ValueError, match="is neither a converted checkpoint"):
    train_and_evaluate(tiny_config, str(tmp_path / "run"))


def test_a_cnn_run_starts_from_another_runs_params_and_batch_stats(tiny_config, tmp_path):
  from jaxvit.train.trainer import setup
  tiny_config.model.name, tiny_config.model.overrides = "resnet18", dict(img_size=8)
  tiny_config.total_steps = 2
  train_and_evaluate(tiny_config, str(tmp_path / "first"))
  want = init_from.load_variables(str(tmp_path / "first"))
  tiny_config.init_from = str(tmp_path / "first")
  run = setup(tiny_config, str(tmp_path / "second"))
  run.checkpoints.close()
  got = {"params": run.state.params, **run.state.mutable}
  assert set(got) == {"params", "batch_stats"}
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(jax.device_get(got))):
    np.testing.assert_array_equal(a, b)
  assert float(np.abs(jax.tree.leaves(want["batch_stats"])[0]).sum()) > 0  # real statistics, not the init
