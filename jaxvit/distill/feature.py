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


def manifold_terms(student_tokens, teacher_tokens, random_indices):
  """Manifold distillation's three relation terms (Hao et al. 2022, arXiv:2107.01378, eqs. 4-6), as
  `huawei-noah/Efficient-Computing` `Distillation/ManifoldKD/losses.py` computes them: `(patch, sample,
  random)`. Tokens are L2-normalised; patch compares the `[N, N]` token Gram matrix of each image,
  sample the `[B, B]` one of each position, random the `[K, K]` one of `random_indices` into the
  B * N flattened tokens. Like the official code, the student's extra leading tokens (class /
  distillation tokens the teacher lacks) are dropped."""
  s = student_tokens.astype(jnp.float32)[:, student_tokens.shape[1] - teacher_tokens.shape[1]:]
  t = jax.lax.stop_gradient(teacher_tokens.astype(jnp.float32))
  if s.shape[:2] != t.shape[:2]:
    raise ValueError(f"student tokens {student_tokens.shape} cannot be matched with teacher tokens {t.shape}")
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
