"""Feature distillation over intermediates: relations between tokens, so widths may differ.

Each loss compares one student layer with one teacher layer (`config.distill.feature` pairs them up
and averages over the pairs). Inputs come from the models' `out`: `block{i}` tokens `[B, N, D]`,
`attn{i}` attention maps `[B, H, N, N]` and `values{i}` `[B, H, N, d]` (with `return_attention`).
"""

import jax
import jax.numpy as jnp


def _normalize(x, eps: float = 1e-12):
  """x / max(||x||, eps) along the last axis (PyTorch's `F.normalize`)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _gram_mse(s, t):
  """mean((T T^T - S S^T)^2) over batched Gram matrices of L2-normalised rows."""
  s, t = _normalize(s), _normalize(t)
  return jnp.mean((t @ jnp.swapaxes(t, -1, -2) - s @ jnp.swapaxes(s, -1, -2)) ** 2)


def align_tokens(student_tokens, teacher_tokens):
  """float32 student tokens without the leading tokens the teacher lacks (its distillation token),
  and the frozen teacher's; the remaining token counts must agree."""
  s = student_tokens.astype(jnp.float32)[:, student_tokens.shape[1] - teacher_tokens.shape[1]:]
  t = jax.lax.stop_gradient(teacher_tokens.astype(jnp.float32))
  if s.shape[:2] != t.shape[:2]:
    raise ValueError(f"student tokens {student_tokens.shape} cannot be matched with teacher tokens {t.shape}")
  return s, t


def manifold_terms(student_tokens, teacher_tokens, random_indices):
  """Manifold distillation's three relation terms (Hao et al. 2022, arXiv:2107.01378, eqs. 4-6), as
  `huawei-noah/Efficient-Computing` `Distillation/ManifoldKD/losses.py` computes them: `(patch, sample,
  random)`. Tokens are L2-normalised; patch compares the `[N, N]` token Gram matrix of each image,
  sample the `[B, B]` one of each position, random the `[K, K]` one of `random_indices` into the
  B * N flattened tokens. Like the official code, the student's extra leading tokens (class /
  distillation tokens the teacher lacks) are dropped."""
  s, t = align_tokens(student_tokens, teacher_tokens)
  flat = lambda x: x.reshape(-1, x.shape[-1])[random_indices]
  return _gram_mse(s, t), _gram_mse(s.swapaxes(0, 1), t.swapaxes(0, 1)), _gram_mse(flat(s), flat(t))


def manifold(student_tokens, teacher_tokens, *, rng, patch_weight: float = 4.0, sample_weight: float = 0.1,
             random_weight: float = 0.2, num_random: int = 192):
  """Weighted manifold distillation loss for one layer pair. Defaults: the official README recipe
  (patch 4, sample 0.1, random 0.2, K 192; its argparse defaults are 1, 1, 1); the K random tokens
  are drawn from `rng` without replacement, shared by student and teacher."""
  b, n = teacher_tokens.shape[:2]
  indices = jax.random.permutation(rng, b * n)[:min(num_random, b * n)]
  patch, sample, random = manifold_terms(student_tokens, teacher_tokens, indices)
  return patch_weight * patch + sample_weight * sample + random_weight * random


def _relation_kl(student_probs, teacher_probs):
  """KL(teacher || student) summed over keys, averaged over everything else (`[..., N, N]` rows)."""
  log_s = jnp.log(jnp.maximum(student_probs, 1e-30))
  log_t = jnp.log(jnp.maximum(teacher_probs, 1e-30))
  return jnp.mean(jnp.sum(teacher_probs * (log_t - log_s), axis=-1))


def _match_heads(student, teacher):
  if student.shape[1] != teacher.shape[1]:
    raise ValueError(f"relation distillation needs the same head count: student {student.shape[1]}, teacher "
                     f"{teacher.shape[1]} (TinyMIM gives the student's distilled block the teacher's head count)")


def attention_map(student_attn, teacher_attn):
  """Attention-map distillation: KL(teacher || student) between the attention maps softmax(q k^T /
  sqrt d) of matched layers, summed over keys and averaged over batch, heads and queries (TinyMIM's
  Q-K relation, `OliverRensu/TinyMIM` `models_tinymim.py`)."""
  _match_heads(student_attn, teacher_attn)
  return _relation_kl(student_attn.astype(jnp.float32), jax.lax.stop_gradient(teacher_attn.astype(jnp.float32)))


def _value_relation(values):
  values = values.astype(jnp.float32)
  return jax.nn.softmax(values @ jnp.swapaxes(values, -1, -2) * values.shape[-1] ** -0.5, axis=-1)


def tinymim(student_attn, student_values, teacher_attn, teacher_values):
  """TinyMIM relation distillation (Ren et al. 2023, arXiv:2301.01296, sec. 3.2): the Q-K relation
  (the attention map) plus the V-V relation softmax(v v^T / sqrt d), each by KL(teacher || student)
  summed over keys and averaged over batch, heads and tokens, weighted 1 : 1; each model uses its own
  head dim d (`OliverRensu/TinyMIM` `models_tinymim.py`)."""
  _match_heads(student_values, teacher_values)
  vv = _relation_kl(_value_relation(student_values), jax.lax.stop_gradient(_value_relation(teacher_values)))
  return attention_map(student_attn, teacher_attn) + vv


def fitnet(projected_student_tokens, teacher_tokens):
  """FitNets' hint loss (Romero et al. 2015, arXiv:1412.6550, eq. 3) on tokens: the mean squared error
  between the student's hint layer after a learned linear regressor (`jaxvit.distill.learned.FitNet`)
  and the teacher's guided layer (mdistiller `mdistiller/distillers/FitNet.py`, whose `ConvReg` becomes
  a linear map on tokens; `F.mse_loss` averages over every element)."""
  s, t = align_tokens(projected_student_tokens, teacher_tokens)
  return jnp.mean((s - t) ** 2)


def token_mask(noise, ratio: float):
  """`[B, N]` bool from uniform `noise` `[B, N]`: True for all but each image's int(N * (1 - ratio))
  lowest-noise tokens (MAE's per-sample shuffle masking, as ViTKD's `random_masking`)."""
  keep = int(noise.shape[1] * (1 - ratio))
  return jnp.argsort(jnp.argsort(noise, axis=1), axis=1) >= keep


def vitkd(low_student, low_teacher, generated, high_teacher, mask, *, alpha: float = 3e-5, beta: float = 3e-6,
          mask_ratio: float = 0.5):
  """ViTKD (Yang et al. 2022, arXiv:2209.02432, eqs. 2-4), as `yzd-v/cls_KD`
  `mmcls/models/dis_losses/vitkd.py` computes it from the aligned features:

  - mimicking: alpha * sum of squared errors / B between the (linearly aligned) patch tokens of the
    student's shallow blocks and the teacher's, `low_*` `[B, L, N, D]`;
  - generation: beta / mask_ratio * sum of squared errors / B between the generator's prediction from
    the masked, aligned last-layer tokens and the teacher's, at the masked tokens (`mask` `[B, N]`).

  Defaults: the DeiT-T <- DeiT III-S config (alpha 3e-5, beta 3e-6, half the tokens masked), used with NKD.
  """
  b = generated.shape[0]
  low_teacher = jax.lax.stop_gradient(low_teacher.astype(jnp.float32))
  high_teacher = jax.lax.stop_gradient(high_teacher.astype(jnp.float32))
  mimic = jnp.sum((low_student.astype(jnp.float32) - low_teacher) ** 2) / b * alpha
  m = mask[..., None].astype(jnp.float32)
  generation = jnp.sum((generated.astype(jnp.float32) * m - high_teacher * m) ** 2) / b * beta / mask_ratio
  return mimic + generation


def dynamicvit(decisions, student_tokens, teacher_tokens, *, keep_rate: float = 0.7, ratio_weight: float = 2.0,
               token_weight: float = 0.5):
  """DynamicViT's training terms besides CE and the KL to the teacher's logits (arXiv:2106.02034, eqs. 9-11),
  as `raoyongming/DynamicViT` `losses.py` (`DistillDiffPruningLoss_dynamic`, `mse_token=True`) computes them:

  - ratio: ratio_weight * mean over stages s of mean_b (kept fraction of the patch tokens - rho^(s+1))^2,
    from the hard keep decisions `[B, N]` of each pruning stage;
  - token distillation: token_weight * the mean squared error between the student's and the (unpruned)
    teacher's final patch tokens `[B, N, C]`, over the tokens kept to the end (0 if none).

  Defaults: the DeiT-S recipe (rho 0.7, ratio weight 2, distillation weight 0.5).
  """
  ratio = sum(jnp.mean((d.astype(jnp.float32).mean(axis=1) - keep_rate ** (s + 1)) ** 2)
              for s, d in enumerate(decisions)) / len(decisions)
  kept = decisions[-1].astype(jnp.float32)
  teacher = jax.lax.stop_gradient(teacher_tokens.astype(jnp.float32))
  squared = jnp.sum((student_tokens.astype(jnp.float32) - teacher) ** 2, axis=-1)
  count = jnp.sum(kept)
  token = jnp.where(count < 0.1, 0.0, jnp.sum(squared * kept) / (jnp.maximum(count, 1.0) * teacher.shape[-1]))
  return ratio_weight * ratio + token_weight * token
