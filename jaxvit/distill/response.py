"""Response (logit) distillation losses: `loss(student_logits, teacher_logits, labels, **hyper) -> scalar`.

Every loss is a pure function of `[B, C]` logits, averaged over the batch, computed in float32, with
no gradient into the teacher. `labels` are class ids `[B]` or soft targets `[B, C]` (Mixup / CutMix;
losses that need one class take the argmax, as the official code does). Default temperatures differ
between methods (4, 2 or 1): each docstring names its default and the file it follows.
"""

import jax
import jax.numpy as jnp

from jaxvit.distill.common import class_ids, prepare


def _kl(target_log_probs, student_log_probs):
  """sum_c p (log p - log q) per example: KL(target || student) from log-probabilities, `[B]`."""
  return jnp.sum(jnp.exp(target_log_probs) * (target_log_probs - student_log_probs), axis=-1)


def kd(student_logits, teacher_logits, labels=None, *, temperature: float = 4.0):
  """Hinton et al. 2015 (arXiv:1503.02531): T^2 * mean_b KL(softmax(t / T) || softmax(s / T)).

  Follows mdistiller `mdistiller/distillers/KD.py` (`kd_loss`): default T = 4 (its CIFAR config;
  mdistiller weights CE 0.1 and KD 0.9), batch mean of the per-example KL.
  """
  s, t = prepare(student_logits, teacher_logits)
  log_p_s = jax.nn.log_softmax(s / temperature)
  log_p_t = jax.nn.log_softmax(t / temperature)
  return temperature ** 2 * jnp.mean(_kl(log_p_t, log_p_s))


def deit_soft(student_logits, teacher_logits, labels=None, *, temperature: float = 1.0):
  """DeiT's soft distillation (Touvron et al. 2021, arXiv:2012.12877, eq. 2), as `facebookresearch/deit`
  `losses.py` computes it: the summed KL times T^2 divided by the number of logits B * C (PyTorch's
  legacy `mean`, kept by the maintainers), not by B. Default tau = 1 (DeiT used tau = 3 in the paper's
  soft variant; its released models use hard distillation)."""
  s, t = prepare(student_logits, teacher_logits)
  log_p_s = jax.nn.log_softmax(s / temperature)
  log_p_t = jax.nn.log_softmax(t / temperature)
  return jnp.sum(_kl(log_p_t, log_p_s)) * temperature ** 2 / s.size


def deit_hard(student_logits, teacher_logits, labels=None):
  """DeiT's hard-label distillation (arXiv:2012.12877, eq. 3): cross-entropy to the teacher's argmax
  (`facebookresearch/deit` `losses.py`, `distillation_type='hard'`)."""
  s, t = prepare(student_logits, teacher_logits)
  targets = jnp.argmax(t, axis=-1)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(s), targets[:, None], axis=-1))


def dkd_parts(student_logits, teacher_logits, labels, *, temperature: float = 4.0):
  """DKD's two terms (Zhao et al. 2022, arXiv:2203.08679, eq. 7): `(tckd, nckd)`, each times T^2 / B.

  TCKD is the KL between the binary distributions [p_gt, 1 - p_gt]; NCKD the KL between the
  distributions over the non-target classes (the official code masks the target logit with -1000).
  Follows mdistiller `mdistiller/distillers/DKD.py` (`dkd_loss`).
  """
  s, t = prepare(student_logits, teacher_logits)
  gt = jax.nn.one_hot(class_ids(labels), s.shape[-1], dtype=bool)

  def binary(logits):  # [B, 2]: log p_gt, log(1 - p_gt) from the full softmax
    log_p = jax.nn.log_softmax(logits / temperature)
    log_gt = jnp.sum(jnp.where(gt, log_p, 0.0), axis=-1)
    log_rest = jax.nn.logsumexp(jnp.where(gt, -jnp.inf, log_p), axis=-1)
    return jnp.stack([log_gt, log_rest], axis=-1)

  def non_target(logits):
    return jax.nn.log_softmax(logits / temperature - 1000.0 * gt)

  tckd = jnp.mean(_kl(binary(t), binary(s))) * temperature ** 2
  nckd = jnp.mean(_kl(non_target(t), non_target(s))) * temperature ** 2
  return tckd, nckd


def dkd(student_logits, teacher_logits, labels, *, alpha: float = 1.0, beta: float = 8.0,
        temperature: float = 4.0):
  """Decoupled KD: alpha * TCKD + beta * NCKD (arXiv:2203.08679, eq. 7; mdistiller `DKD.py`).

  Defaults are mdistiller's CIFAR ones (alpha 1, beta 8, T 4; beta is tuned per teacher-student pair,
  mdistiller issue #6); its ImageNet and ViT settings use beta 0.5 and T 1. The official warm-up,
  min(epoch / 20, 1) on the whole term, is `config.distill.warmup_steps`.
  """
  tckd, nckd = dkd_parts(student_logits, teacher_logits, labels, temperature=temperature)
  return alpha * tckd + beta * nckd


def nkd(student_logits, teacher_logits, labels, *, temperature: float = 1.0, gamma: float = 1.5):
  """Normalized KD (Yang et al. 2023, arXiv:2303.13005, eq. 8), as `yzd-v/cls_KD`
  `mmcls/models/dis_losses/nkd.py`: the target term -mean_b(t_gt * log s_gt) at T = 1 plus
  -gamma * T^2 * mean_b sum softmax(t_nt / T) log softmax(s_nt / T) over the non-target classes
  (the target column removed, both renormalised). Defaults T = 1, gamma = 1.5."""
  s, t = prepare(student_logits, teacher_logits)
  gt = jax.nn.one_hot(class_ids(labels), s.shape[-1], dtype=bool)
  log_s_gt = jnp.sum(jnp.where(gt, jax.nn.log_softmax(s), 0.0), axis=-1)
  t_gt = jnp.sum(jnp.where(gt, jax.nn.softmax(t), 0.0), axis=-1)
  target = -jnp.mean(t_gt * log_s_gt)
  # dropping the target column == masking it with -inf before the softmax
  log_s_nt = jax.nn.log_softmax(jnp.where(gt, -jnp.inf, s / temperature))
  p_t_nt = jax.nn.softmax(jnp.where(gt, -jnp.inf, t / temperature))
  non_target = -gamma * temperature ** 2 * jnp.mean(jnp.sum(jnp.where(gt, 0.0, p_t_nt * log_s_nt), axis=-1))
  return target + non_target


def standardize(logits, eps: float = 1e-7):
  """Logit standardisation (Sun et al. 2024, arXiv:2403.01427, eq. 8): (z - mean z) / (std z + eps)
  per example, with the unbiased std as `sunshangquan/logit-standardization-KD` computes it."""
  logits = logits.astype(jnp.float32)
  mean = jnp.mean(logits, axis=-1, keepdims=True)
  std = jnp.std(logits, axis=-1, keepdims=True, ddof=1)
  return (logits - mean) / (std + eps)


def logit_standardization(student_logits, teacher_logits, labels=None, *, base: str = "kd",
                          temperature: float = 2.0, **hyper):
  """Any response loss on z-scored logits (arXiv:2403.01427). `base` is `kd` or `dkd`; the official
  base temperature is 2 and its KD weight 9 (`config.distill.weight`)."""
  if base not in ("kd", "dkd"):
    raise ValueError(f"logit_standardization base={base!r}; accepted: ('kd', 'dkd')")
  fn = kd if base == "kd" else dkd
  return fn(standardize(student_logits), standardize(teacher_logits), labels, temperature=temperature, **hyper)


def normkd(student_logits, teacher_logits, labels=None, *, scale: float = 1.5):
  """NormKD (Chi et al. 2023, arXiv:2308.00520): a per-example temperature T_i = scale * std(z_i)
  (unbiased std), for teacher and student separately, and each example's KL scaled by its teacher
  T^2, averaged over the batch (after `fpcsong/BiLD` `distil_losses/NormKD.py`; its function default
  scale 1.5, its scripts use 2 or 3)."""
  s, t = prepare(student_logits, teacher_logits)
  t_s = scale * jnp.std(s, axis=-1, keepdims=True, ddof=1)
  t_t = scale * jnp.std(t, axis=-1, keepdims=True, ddof=1)
  kl = _kl(jax.nn.log_softmax(t / t_t), jax.nn.log_softmax(s / t_s))
  return jnp.mean(kl * t_t[:, 0] ** 2)


def wttm(student_logits, teacher_logits, labels=None, *, gamma: float = 0.2):
  """Weighted transformed teacher matching (Zheng & Yang 2024, arXiv:2402.11148, eq. 14), as
  `zkxufo/TTM` `distiller_zoo/wttm.py`: the teacher's power-transformed distribution
  q = p_t^gamma / U with U = sum p_t^gamma, no student temperature, loss mean_b U * KL(q || p_s).
  Default gamma 0.2 (the README's WTTM example; the script's default 1 reduces it to KD at T = 1)."""
  s, t = prepare(student_logits, teacher_logits)
  log_power = gamma * jax.nn.log_softmax(t)
  log_norm = jax.nn.logsumexp(log_power, axis=-1)
  log_q = log_power - log_norm[:, None]
  return jnp.mean(jnp.exp(log_norm) * _kl(log_q, jax.nn.log_softmax(s)))


def tf_kd(student_logits, teacher_logits=None, labels=None, *, temperature: float = 40.0,
          correct_prob: float = 0.99, multiplier: float = 1.0):
  """Teacher-free KD by a manually designed virtual teacher (Yuan et al. 2020, arXiv:1909.11723), as
  `yuanli2333/Teacher-free-Knowledge-Distillation` `my_loss_function.py` (`loss_kd_regularization`)
  computes it: the virtual teacher puts `correct_prob` on the label and spreads the rest uniformly;
  the target is softmax(probabilities / T) (a quirk of the official code: almost uniform), compared
  with the T = 1 student by KL averaged over all B * C entries (PyTorch's `mean`), no T^2, times
  `multiplier`. Defaults: its MobileNetV2 setting (T 40, alpha 0.95, multiplier 1). No teacher."""
  s = student_logits.astype(jnp.float32)
  num_classes = s.shape[-1]
  gt = jax.nn.one_hot(class_ids(labels), num_classes)
  virtual = gt * correct_prob + (1 - gt) * (1 - correct_prob) / (num_classes - 1)
  log_q = jax.nn.log_softmax(virtual / temperature)
  return multiplier * jnp.sum(_kl(log_q, jax.nn.log_softmax(s))) / s.size


def function_matching(student_logits, teacher_logits, labels=None, *, temperature: float = 1.0):
  """Patient and consistent function matching (Beyer et al. 2022, arXiv:2106.05237), big_vision
  `trainers/proj/distill/distill.py` `dist(..., 'kl')`: T^2 * mean_b KL(softmax(t / T) || softmax(s / T)),
  T = 1. The method is the recipe: the teacher sees the student's exact augmented (mixed) view, and
  the label is not used."""
  return kd(student_logits, teacher_logits, temperature=temperature)


def ofa(student_logits, teacher_logits, labels, *, eps: float = 1.0, temperature: float = 1.0):
  """OFA-KD's loss (Hao et al. 2023, arXiv:2310.19444, eq. 4), `Hao840/OFAKD` `distillers/ofa.py`
  (`ofa_loss`): -mean_b sum_c ((p_t + y)^eps - y) log p_s with y the one-hot label, at temperature T
  without T^2. eps = 1 is the cross-entropy to the teacher; eps > 1 enhances the target class
  (1.5 for a DeiT-T teacher and ResNet-18 student). Defaults eps 1, T 1."""
  s, t = prepare(student_logits, teacher_logits)
  onehot = jax.nn.one_hot(class_ids(labels), s.shape[-1])
  weight = (jax.nn.softmax(t / temperature) + onehot) ** eps - onehot
  return -jnp.mean(jnp.sum(weight * jax.nn.log_softmax(s / temperature), axis=-1))
