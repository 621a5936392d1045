import numpy as np
import pytest
import tensorflow as tf

from jaxvit.data import preprocess, randaugment

SEED = tf.constant([3, 7], tf.int64)


def image(h=32, w=48, seed=0):
  return tf.constant(np.random.RandomState(seed).rand(h, w, 3).astype(np.float32))


def run(spec, img, seed=SEED):
  return preprocess.parse(spec)({"image": img, "label": 0}, seed)["image"].numpy()


def test_parse_errors_name_the_op_and_accepted_ones():
  with pytest.raises(ValueError, match="unknown preprocessing op 'blur'; accepted: \\[.*'flip_lr'"):
    preprocess.parse("decode|blur(3)")
  with pytest.raises(ValueError, match="is not of the form"):
    preprocess.parse("resize(size=)")
  with pytest.raises(ValueError, match="resize\\(1, 2, 3, 4, 5\\)"):
    preprocess.parse("resize(1, 2, 3, 4, 5)")


def test_decode_makes_rgb_floats():
  grey = tf.constant(np.full((8, 8, 1), 255, np.uint8))
  out = run("decode", grey)
  assert out.shape == (8, 8, 3) and out.dtype == np.float32 and np.all(out == 1.0)


def test_random_ops_are_deterministic_per_seed_and_vary_across_seeds():
  spec = "random_resized_crop(16)|flip_lr|randaugment(2, 9, 0.5)|normalize|random_erase(1.0)"
  a, b = run(spec, image()), run(spec, image())
  np.testing.assert_array_equal(a, b)
  assert a.shape == (16, 16, 3)
  others = [run(spec, image(), tf.constant([3, s], tf.int64)) for s in range(8, 12)]
  assert all(not np.array_equal(a, o) for o in others)


def test_center_crop_takes_the_middle():
  img = tf.constant(np.arange(40 * 40 * 3, dtype=np.float32).reshape(40, 40, 3))
  out = run("center_crop(20, 0.5)", img, tf.constant([0, 0], tf.int64))
  np.testing.assert_allclose(out, img.numpy()[10:30, 10:30], rtol=1e-5)  # 40 / 0.5 = resize to 40: no-op


def test_flip_lr_flips_about_half_the_time():
  img = image(4, 4)
  flips = [np.array_equal(run("flip_lr", img, tf.constant([1, s], tf.int64)), img.numpy()[:, ::-1])
           for s in range(200)]
  assert 70 < sum(flips) < 130


def test_random_erase_fills_one_box_with_noise():
  img = tf.zeros((32, 32, 3))
  out = run("random_erase(1.0)", img)
  changed = np.any(out != 0, axis=-1)
  rows, cols = np.nonzero(changed)
  assert changed.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a full box
  assert 0.02 * 1024 * 0.5 < changed.sum() < 1024 / 3 * 1.5


@pytest.mark.parametrize("op", randaugment.OPS, ids=lambda op: getattr(op, "__name__", "enhance"))
def test_every_randaugment_op_keeps_shape_and_range(op):
  out = op(image(), tf.constant(9.0), SEED).numpy()
  assert out.shape == (32, 48, 3) and out.min() >= -1e-6 and out.max() <= 1 + 1e-6


def test_randaugment_ops_by_hand():
  img = image()
  np.testing.assert_allclose(randaugment.invert(img, 0.0, SEED), 1 - img.numpy())
  solar = randaugment.solarize(img, tf.constant(5.0), SEED).numpy()  # threshold 128 / 255
  np.testing.assert_allclose(solar, np.where(img.numpy() >= 128 / 255, 1 - img.numpy(), img.numpy()))
  kept = randaugment.posterize(img, tf.constant(0.0), SEED).numpy() * 255  # level 0 keeps the top 4 bits
  assert np.all(np.round(kept) % 16 == 0)
  flat = tf.fill((8, 8, 3), 76 / 255)  # an exact 8-bit level (PIL works on uint8)
  np.testing.assert_allclose(randaugment.equalize(flat, 0.0, SEED), flat)  # one grey level: unchanged


def test_a_bare_op_takes_the_given_defaults():
  img = tf.fill((2, 2, 3), 0.5)
  ops = preprocess.parse("normalize", {"normalize": dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))})
  np.testing.assert_allclose(ops({"image": img}, SEED)["image"], 0.0)
  explicit = preprocess.parse("normalize(0.0, 0.5)", {"normalize": dict(mean=(0.5,) * 3, std=(0.25,) * 3)})
  np.testing.assert_allclose(explicit({"image": img}, SEED)["image"], 1.0)
