"""A folder of `<split>/<class>/<image>` files trains through tfds' ImageFolder; a broken image is named."""

import numpy as np
import pytest
from PIL import Image

from jaxvit.train.trainer import train_and_evaluate


@pytest.fixture
def folder(tmp_path):
  rng = np.random.RandomState(0)
  for split, count in (("train", 24), ("test", 6)):
    for label in ("cat", "dog"):
      (tmp_path / split / label).mkdir(parents=True)
      for i in range(count):
        Image.fromarray(rng.randint(0, 255, (10, 12, 3), np.uint8)).save(tmp_path / split / label / f"{i}.png")
  return tmp_path


def folder_config(tiny_config, root):
  tiny_config.data.update(name=f"folder:{root}", pp_train="decode|resize(8)|flip_lr", pp_eval="decode|resize(8)")
  tiny_config.batch_size, tiny_config.eval_batch_size = 16, 16
  return tiny_config


def test_trains_on_a_folder_of_images(tiny_config, folder, tmp_path):
  summary = train_and_evaluate(folder_config(tiny_config, folder), str(tmp_path / "run"))
  assert summary["steps"] == 8 and summary["dataset"].startswith("folder:")


def test_an_undecodable_image_is_named(tiny_config, folder, tmp_path):
  broken = folder / "train" / "dog" / "3.png"
  broken.write_bytes(b"not a png")
  with pytest.raises(ValueError, match=f"cannot decode image file\\(s\\) \\['{broken}'\\]"):
    train_and_evaluate(folder_config(tiny_config, folder), str(tmp_path / "run"))
