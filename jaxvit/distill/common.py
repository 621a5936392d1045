"""What every distillation loss does first: float32 logits, a frozen teacher, class ids from labels."""

import jax
import jax.numpy as jnp


def prepare(student_logits, teacher_logits):
  """float32 `[B, C]` student and teacher logits; no gradient flows into the teacher."""
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"student logits {student_logits.shape} and teacher logits {teacher_logits.shape} differ; "
                     f"the teacher must predict the student's classes")
  return student_logits.astype(jnp.float32), jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))


def class_ids(labels):
  """Class ids `[B]` from ids or from soft targets `[B, C]` (their argmax, as the official code does)."""
  if labels is None:
    raise ValueError("this distillation loss needs the labels")
  return jnp.argmax(labels, axis=-1) if labels.ndim == 2 else labels
