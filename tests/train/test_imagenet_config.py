"""The ImageNet recipe's whole path (RandAugment, random erasing, repeated augmentation, Mixup /
CutMix, DeiT schedule) on `tfds.testing.mock_data` for `imagenet2012`."""

import pytest
import tensorflow_datasets as tfds

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
