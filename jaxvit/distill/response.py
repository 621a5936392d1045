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


@jax.custom_vjp
def gradient_reversal(x, scale):
  """Identity forward; the backward pass multiplies the gradient by `scale` (Ganin & Lempitsky 2015).
  As in CTKD's `models/temp_global.py` the sign lives in `scale` (its lambda runs 0 -> -1)."""
  return x


def _reversal_fwd(x, scale):
  return x, scale


def _reversal_bwd(scale, grad):
  return scale * grad, jnp.zeros_like(scale)


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


def ctkd_temperature(theta, grl_lambda, *, t_start: float = 1.0, t_end: float = 20.0):
  """CTKD's global temperature T = t_start + t_end * sigmoid(GRL(theta, lambda)) (Li et al. 2023,
  arXiv:2211.16231, sec. 3.2; `zhengli97/CTKD` `helper/loops.py`)."""
  return t_start + t_end * jax.nn.sigmoid(gradient_reversal(theta, jnp.asarray(grl_lambda, jnp.float32)))


def ctkd_lambda(step, total_steps: int, *, lambda_max: float = 0.0, lambda_min: float = -1.0,
               decay_fraction: float = 10 / 240):
  """CTKD's gradient-reversal strength at `step`: cosine from lambda_max to lambda_min over the first
  `decay_fraction` of training, then constant (`CosineDecay` in `zhengli97/CTKD` `train_student.py`;
  its CIFAR script decays over 10 of 240 epochs)."""
  length = max(int(round(decay_fraction * total_steps)), 1)
  progress = jnp.minimum(jnp.asarray(step, jnp.float32), length) / length
  return lambda_min + (lambda_max - lambda_min) * (jnp.cos(jnp.pi * progress) + 1) / 2


def ctkd(student_logits, teacher_logits, labels=None, *, theta, grl_lambda, t_start: float = 1.0,
         t_end: float = 20.0):
  """Curriculum temperature KD (Li et al. 2023, arXiv:2211.16231): Hinton KD (T^2, batch mean) at the
  learnable temperature `ctkd_temperature(theta, grl_lambda)`. The student minimises the loss while
  the reversed gradient makes theta maximise it, ever harder as lambda goes 0 -> -1 (the objective
  schedules lambda and owns theta, initialised to 1 as `Global_T`). `zhengli97/CTKD` `distiller_zoo/KD.py`
  with `--have_mlp 1 --mlp_name global`; its CIFAR script weights CE 0.1 and KD 0.9."""
  return kd(student_logits, teacher_logits,
            temperature=ctkd_temperature(theta, grl_lambda, t_start=t_start, t_end=t_end))


def _top2_labels(labels, num_classes):
  """USKD's targets: `(ids [B, k], values [B, k])`: the label (k = 1) or a soft label's top two (k = 2)."""
  if labels.ndim == 2:
    values, ids = jax.lax.top_k(labels.astype(jnp.float32), 2)
    return ids, values
  return labels[:, None], jnp.ones((labels.shape[0], 1), jnp.float32)


def uskd(student_logits, teacher_logits=None, labels=None, *, weak_logits, alpha: float = 1.0, beta: float = 0.1,
         mu: float = 0.005):
  """Teacher-free USKD (Yang et al. 2023, "From Knowledge Distillation to Self-Knowledge Distillation",
  arXiv:2305.18513), as `yzd-v/cls_KD` `mmcls/models/dis_losses/uskd.py` computes it:

  - target: -mean_b p~ log s_gt with p~ = s_gt^2 + 1 - mean_batch(s_gt^2) (detached);
  - weak supervision: a linear head on a middle block's class token (`weak_logits`, block depth / 2 - 1)
    trained by mu * CE on 0.9 / 0.1 smoothed labels;
  - non-target: CE between the student's non-target softmax and Zipf weights 1 / rank, ranked by
    w / (1 - w_gt) + log s / (1 - log s_gt) (the official code ranks with the student's *log*-probabilities).

  Soft (Mixup) labels use their top two classes, each weighted by its mixing value. alpha 1, beta 0.1,
  mu 0.005 are the official defaults; the total is CE + this loss. No teacher.
  """
  s = student_logits.astype(jnp.float32)
  w = weak_logits.astype(jnp.float32)
  b, num_classes = s.shape
  ids, values = _top2_labels(labels, num_classes)
  log_s = jax.nn.log_softmax(s)
  s_gt = jnp.take_along_axis(jnp.exp(log_s), ids, axis=1)
  target = s_gt ** 2 + values - jnp.mean(s_gt ** 2, axis=0, keepdims=True)
  target = jax.lax.stop_gradient(jnp.where(values == 0, 0.0, target))
  log_s_gt = jnp.take_along_axis(log_s, ids, axis=1)
  loss_target = -jnp.mean(jnp.sum(target * log_s_gt, axis=1))

  hard = labels.astype(jnp.float32) if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
  smoothed = 0.9 * hard + 0.1 / num_classes
  log_w = jax.nn.log_softmax(w)
  loss_weak = -jnp.mean(jnp.sum(mu * smoothed * log_w, axis=1))

  w_probs = jnp.exp(log_w)
  w_gt = jnp.take_along_axis(w_probs, ids, axis=1)
  score = (w_probs / (1 - jnp.sum(w_gt, axis=1, keepdims=True) + 1e-6)
           + log_s / (1 - jnp.sum(log_s_gt, axis=1, keepdims=True) + 1e-6))
  position = jnp.argsort(jnp.argsort(-score, axis=1), axis=1)  # 0 for the highest score
  zipf = 1.0 / (position + 1.0)
  is_target = jnp.any(jax.nn.one_hot(ids, num_classes, dtype=bool), axis=1)
  zipf = jnp.where(is_target, 0.0, zipf)
  zipf = jax.lax.stop_gradient(zipf / jnp.sum(zipf, axis=1, keepdims=True))
  non_target_logits = jnp.where(is_target, -jnp.inf, s)
  log_non = jax.nn.log_softmax(non_target_logits)
  loss_non = -jnp.mean(jnp.sum(jnp.where(is_target, 0.0, zipf * log_non), axis=1))
  return alpha * loss_target + beta * loss_non + loss_weak
