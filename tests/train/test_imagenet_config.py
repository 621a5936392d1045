"""The ImageNet recipe's whole path (RandAugment, random erasing, repeated augmentation, Mixup /
CutMix, DeiT schedule) on `tfds.testing.mock_data` for `imagenet2012`."""

import pytest
import tensorflow_datasets as tfds

import jaxvit

from configs import deit_small_imagenet, deit_tiny_imagenet
from jaxvit.train.trainer import train_and_evaluate


def test_recipe_values():
  c = deit_small_imagenet.get_config()
  assert c.model.name == "deit_small_patch16_224" and c.total_epochs == 300 and c.batch_size == 1024
  assert c.optimizer.lr == pytest.approx(1e-3) and c.optimizer.weight_decay == 0.05
  assert c.optimizer.warmup_steps == 5 * (1_281_167 // 1024) and c.label_smoothing == 0.1
  assert (c.mixup.mixup_alpha, c.mixup.cutmix_alpha) == (0.8, 1.0) and "randaugment(2, 9, 0.5)" in c.data.pp_train
  assert c.model.overrides.drop_path_rate == 0.1 and c.data.repeated_aug == 3


def test_runlocal_trains_on_mock_imagenet(tmp_path):
  config = deit_tiny_imagenet.get_config("runlocal")
  config.async_checkpoints = False  # mock_data swaps in a fake file system while a dataset is built
  with tfds.testing.mock_data(num_examples=64):
    summary = train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 6 and summary["dataset"] == "imagenet2012" and summary["final_top1"] is not None


@pytest.mark.parity  # makes the source weights with timm
def test_finetune_recipe_starts_from_converted_timm_weights(tmp_path, capsys):
  import timm
  from configs import deit_small_finetune
  from jaxvit.convert import convert_state_dict, save_converted
  _, variables = convert_state_dict("deit_small_patch16_224", timm.create_model("deit_small_patch16_224").state_dict())
  save_converted(str(tmp_path / "deit_s"), variables, "deit_small_patch16_224", {})
  config = deit_small_finetune.get_config(f"init={tmp_path / 'deit_s'},runlocal")
  config.async_checkpoints = False
  with tfds.testing.mock_data(num_examples=64):
    summary = train_and_evaluate(config, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert "init_from: pos_embed resampled (1, 197, 384) -> (1, 5, 384)" in out
  assert "init_from: head/kernel replaced (384, 1000) -> (384, 10) (zeros)" in out
  assert summary["steps"] == 6 and summary["dataset"] == "cifar10"


def test_finetune_rejects_unknown_dataset():
  from configs import deit_small_finetune
  with pytest.raises(ValueError, match="dataset='mnist'; accepted: \\['cifar10', 'imagenette'\\]"):
    deit_small_finetune.get_config("dataset=mnist")


def test_cf_vit_recipe_switches_on_informative_selection_on_mock_imagenet(tmp_path, capsys):
  from configs import cf_vit_deit_small
  config = cf_vit_deit_small.get_config("runlocal")
  config.async_checkpoints = False
  with tfds.testing.mock_data(num_examples=64):
    summary = train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "model schedule: {'informative_selection': False} from step 1" in out
  assert "model schedule: {'informative_selection': True} from step 4" in out and "exit_accuracy0" in out
  assert summary["steps"] == 6 and summary["final_top1"] is not None


def test_model_schedule_errors_name_the_entry():
  import jaxvit
  from configs import common
  from jaxvit.train.trainer import model_phases
  config = common.base_config()
  model = jaxvit.create_model("cf_deit_small_224")
  config.model_schedule = ((0, dict(keep_ratio=0.25)), (10, dict(informative_selection=False)))
  phases = model_phases(config, model)
  assert [(s, m.keep_ratio, m.informative_selection) for s, m in phases] == [(0, 0.25, True), (10, 0.25, False)]
  config.model_schedule = ((10, {}), (5, {}))
  with pytest.raises(ValueError, match="model_schedule entry \\(5, \\{\\}\\); accepted: \\(start step, dict"):
    model_phases(config, model)
  config.model_schedule = ((0, dict(keep_ratio=2.0)),)
  with pytest.raises(ValueError, match="keep_ratio=2.0; accepted: \\(0, 1\\]"):
    model_phases(config, model)


def test_evit_recipes_are_the_official_scripts():
  from configs import evit_deit_small
  scratch = evit_deit_small.get_config()  # run_code.sh
  steps_per_epoch = 1_281_167 // 2048
  assert scratch.total_epochs == 300 and scratch.batch_size == 2048 and scratch.optimizer.lr == pytest.approx(2e-3)
  assert dict(scratch.model.overrides.reduction) == dict(kind="evit", keep_rate=0.7, locations=(3, 6, 9),
                                                         fuse_token=True)
  assert dict(scratch.keep_rate_warmup) == dict(start=10 * steps_per_epoch, steps=100 * steps_per_epoch, levels=4)
  tuned = evit_deit_small.get_config("init=ckpt/deit_s")  # finetune.sh
  assert tuned.total_epochs == 30 and tuned.init_from == "ckpt/deit_s" and "keep_rate_warmup" not in tuned
  assert (tuned.optimizer.lr, tuned.optimizer.min_lr, tuned.optimizer.weight_decay, tuned.optimizer.warmup_steps) == \
      (pytest.approx(8e-5), 2e-6, 1e-6, 0)
  import jax
  from jaxvit.dynamic import evit
  from jaxvit.train.trainer import build_model
  smoke = evit_deit_small.get_config("runlocal")  # its 2-block DeiT-S builds, and the warm-up fits its 6 steps
  model = build_model(smoke, 1000)
  jax.eval_shape(lambda: jaxvit.init_variables(model))
  rates = [evit.warmup_model(model, smoke.keep_rate_warmup, step)[1] for step in range(smoke.total_steps)]
  assert rates[0] == 1.0 and rates[-1] == 0.7 and len(set(rates)) == 3, rates
