"""`digits`: scikit-learn's bundled 8x8 handwritten digits as a TFDS dataset (works offline).

1,797 real images of 10 classes (UCI optical recognition of handwritten digits), scaled from
0..16 to 0..255 grey levels. A fixed stratified split keeps 360 images (36 per class) for `test`
and 1,437 for `train`, the same on every machine.
"""

import numpy as np
import tensorflow_datasets as tfds

TEST_SIZE = 360


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's `load_digits()` images, `train` (1,437) and `test` (360)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Stratified 1,437 / 360 split of sklearn.datasets.load_digits, seed 0."}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships inside scikit-learn
    train, test = stratified_split()
    return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

  def _generate_examples(self, indices):
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    for i in indices:
      yield int(i), {"image": images[i], "label": int(digits.target[i])}


def stratified_split(seed: int = 0):
  """Indices of the fixed train / test split: 36 test images per class, the rest for training."""
  from sklearn.datasets import load_digits
  labels = load_digits().target
  rng = np.random.RandomState(seed)
  test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_SIZE // 10] for c in range(10)])
  train = np.setdiff1d(np.arange(len(labels)), test)
  return train, np.sort(test)
