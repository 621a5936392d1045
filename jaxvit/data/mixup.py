"""Mixup (Zhang et al. 2018, arXiv:1710.09412) and CutMix (Yun et al. 2019, arXiv:1905.04899) on a batch,
as timm's `Mixup(mode="batch")` that DeiT uses: one lambda per batch, each image paired with the
batch reversed, and CutMix's lambda corrected to the pasted box's true area.

Runs inside the jitted train step with the step's rng, so it is deterministic and resumable. Targets
are left unsmoothed: the loss's label smoothing then gives exactly timm's `mixup_target`.
"""

import jax
import jax.numpy as jnp


def cutmix_box(rng, lam, height: int, width: int):
  """timm's `rand_bbox`: a box of area about (1 - lam) H W around a uniform centre, clipped."""
  ratio = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (height * ratio).astype(jnp.int32), (width * ratio).astype(jnp.int32)
  cy = jax.random.randint(jax.random.fold_in(rng, 0), (), 0, height)
  cx = jax.random.randint(jax.random.fold_in(rng, 1), (), 0, width)
  top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  return inside, 1.0 - (bottom - top) * (right - left) / (height * width)


def mixup_cutmix(rng, images, labels, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0):
  """`(images, soft_targets)`: with probability `prob`, CutMix (chosen with `switch_prob` when both
  alphas are set) or Mixup between each image and its partner in the reversed batch."""
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    raise ValueError("config.mixup needs mixup_alpha > 0 or cutmix_alpha > 0")
  k_apply, k_switch, k_lam, k_box = jax.random.split(rng, 4)
  targets = jax.nn.one_hot(labels, num_classes)
  partner_images, partner_targets = images[::-1], targets[::-1]
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(k_switch) < switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0)
  alpha = jnp.where(use_cutmix, max(cutmix_alpha, 1e-6), max(mixup_alpha, 1e-6))
  lam = jax.random.beta(k_lam, alpha, alpha)
  inside, box_lam = cutmix_box(k_box, lam, images.shape[1], images.shape[2])
  mixed = jnp.where(use_cutmix, jnp.where(inside[None, :, :, None], partner_images, images),
                    lam * images + (1 - lam) * partner_images)
  lam = jnp.where(use_cutmix, box_lam, lam)
  apply = jax.random.uniform(k_apply) < prob
  lam = jnp.where(apply, lam, 1.0).astype(images.dtype)
  images = jnp.where(apply, mixed, images)
  return images, lam * targets + (1 - lam) * partner_targets
