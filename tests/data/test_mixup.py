import jax
import jax.numpy as jnp
import numpy as np

from jaxvit.data.mixup import cutmix_box, mixup_cutmix


def batch():
  return jax.random.normal(jax.random.key(0), (6, 10, 10, 3)), jnp.arange(6) % 4


def test_mixup_only_blends_with_the_reversed_batch():
  images, labels = batch()
  mixed, targets = mixup_cutmix(jax.random.key(1), images, labels, 4, mixup_alpha=0.8, cutmix_alpha=0.0)
  lam = float(targets[0, labels[0]]) if labels[0] != labels[-1] else None
  np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], atol=1e-5)
  np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)


def test_cutmix_pastes_a_box_and_lambda_is_its_area():
  images, labels = batch()
  mixed, targets = mixup_cutmix(jax.random.key(2), images, labels, 4, mixup_alpha=0.0, cutmix_alpha=1.0)
  pasted = np.all(np.asarray(mixed[0]) == np.asarray(images[-1]), axis=-1)
  kept = np.all(np.asarray(mixed[0]) == np.asarray(images[0]), axis=-1)
  assert np.all(pasted | kept)
  lam = 1 - pasted.mean()
  np.testing.assert_allclose(targets[0, labels[0]], lam, atol=1e-6)


def test_box_area_matches_lambda_inside_the_image():
  inside, lam = cutmix_box(jax.random.key(0), jnp.float32(0.75), 100, 100)
  assert float(lam) == 1 - float(inside.mean())


def test_prob_zero_changes_nothing():
  images, labels = batch()
  mixed, targets = mixup_cutmix(jax.random.key(3), images, labels, 4, prob=0.0)
  np.testing.assert_array_equal(mixed, images)
  np.testing.assert_array_equal(targets, jax.nn.one_hot(labels, 4))
