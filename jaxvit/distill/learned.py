"""The parts of distillation objectives that learn: FitNet's regressor, ViTKD's aligners and generator,
OFA-KD's stage branches, USKD's weak head and CTKD's temperature.

`Learned` computes them from the student's `out` and the batch (teacher outputs included). Its
parameters are the train state's `loss_params`: optimised with the student by the same optimizer,
never part of the model, so evaluation, export and `init_from` see the student alone.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvit import layers
from jaxvit.distill import feature, response
from jaxvit.models.vit import Block

LEARNED_KINDS = ("ctkd", "uskd")  # response losses with parameters
LEARNED_FEATURES = ("fitnet", "vitkd", "ofa")


def _project(features: int, name: str):
  return layers.dense(features, ("embed", "mlp"), name=name)


class ViTKDGenerator(nn.Module):
  """ViTKD's generation branch (arXiv:2209.02432, sec. 3.3): a learned mask token replaces the masked
  tokens, then 3x3 conv - ReLU - 3x3 conv on the token grid predicts the teacher's tokens."""
  grid: tuple

  @nn.compact
  def __call__(self, tokens, mask):
    b, n, d = tokens.shape
    mask_token = self.param("mask_token", nn.initializers.zeros, (d,))
    x = jnp.where(mask[..., None], mask_token, tokens).reshape(b, *self.grid, d)
    x = nn.Conv(d, (3, 3), padding=1, name="conv1")(x)
    x = nn.Conv(d, (3, 3), padding=1, name="conv2")(nn.relu(x))
    return x.reshape(b, n, d)


def patch_merging(x, grid: tuple):
  """Swin's 2x2 neighbour concatenation `[B, H*W, C] -> [B, H/2*W/2, 4C]` (order x00, x10, x01, x11)."""
  b, _, c = x.shape
  h, w = grid
  if h % 2 or w % 2:
    raise ValueError(f"OFA-KD's patch merging needs an even token grid, got {grid}")
  x = x.reshape(b, h, w, c)
  x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
  return x.reshape(b, (h // 2) * (w // 2), 4 * c)


class OFABranch(nn.Module):
  """One OFA-KD exit for a ViT student (Hao et al. 2023, arXiv:2310.19444, sec. 3.2, `Hao840/OFAKD`
  `distillers/ofa.py`): patch merging (LayerNorm, bias-free linear, GELU) down to a 7x7 grid, then
  max(4 - stage, 1) timm blocks (4 heads, no qkv bias, LayerNorm eps 1e-5), the class token (GAP
  without one) and a linear classifier. The official code reads a `num_tokens` attribute timm 0.6
  no longer has; the class tokens are kept aside from the merging here, as it intends."""
  stage: int
  num_classes: int
  grid: tuple
  num_prefix_tokens: int
  final_grid: int = 7

  @nn.compact
  def __call__(self, tokens):
    width = tokens.shape[-1]
    prefix, x = tokens[:, :self.num_prefix_tokens], tokens[:, self.num_prefix_tokens:]
    grid = tuple(self.grid)
    merges = max(int(np.log2(grid[0] / self.final_grid)), 0)
    for i in range(merges):
      x = patch_merging(x, grid)
      grid = (grid[0] // 2, grid[1] // 2)
      x = nn.LayerNorm(1e-5, name=f"merge_{i}_norm")(x)
      x = nn.Dense(width, use_bias=False, kernel_init=layers.init.trunc_normal_02, name=f"merge_{i}_reduction")(x)
      x = nn.gelu(x, approximate=False) if i == 0 or i != merges - 1 else x
    x = jnp.concatenate([prefix, x], axis=1)
    for i in range(max(4 - self.stage, 1)):
      x, _ = Block(num_heads=4, qkv_bias=False, norm_eps=1e-5, name=f"blocks_{i}")(x, 0.0)
    pooled = x[:, 0] if self.num_prefix_tokens else x.mean(axis=1)
    return nn.Dense(self.num_classes, kernel_init=layers.init.trunc_normal_02, name="head")(pooled)


class Learned(nn.Module):
  """`(response_inputs, feature_loss)` of a `config.distill` with learned parts.

  `response_inputs` are the extra arguments of the response loss (`theta` / `grl_lambda` for CTKD,
  `weak_logits` for USKD); `feature_loss` is FitNet's, ViTKD's or OFA-KD's stage term (None otherwise).
  `student` / `teacher` describe the models: `depth`, `num_prefix_tokens`, `grid`, `num_classes`.
  """
  kind: Optional[str]
  feature_kind: Optional[str]
  pairs: tuple
  student: dict
  teacher: dict
  hyper: dict
  feature_hyper: dict
  total_steps: int

  def response_inputs(self, out, batch):
    if self.kind == "ctkd":
      theta = self.param("ctkd_theta", nn.initializers.ones, ())  # `Global_T`: torch.ones(1)
      schedule = {k: v for k, v in self.hyper.items() if k in ("lambda_max", "lambda_min", "decay_fraction")}
      return {"theta": theta, "grl_lambda": response.ctkd_lambda(batch["step"], self.total_steps, **schedule)}
    if self.kind == "uskd":
      mid = out[f"block{max(self.student['depth'] // 2 - 1, 0)}"][:, 0]  # class token after block depth / 2 - 1
      return {"weak_logits": layers.dense(self.student["num_classes"], ("embed", "classes"), name="uskd_weak")(mid)}
    return {}

  def feature_loss(self, out, batch):
    kind, hyper, teacher_features = self.feature_kind, self.feature_hyper, batch.get("teacher_features") or {}
    patches = lambda x, who: x[:, who["num_prefix_tokens"]:]
    if kind == "fitnet":
      terms = [feature.fitnet(_project(teacher_features[f"block{j}"].shape[-1], f"fitnet_{n}")(out[f"block{i}"]),
                              teacher_features[f"block{j}"]) for n, (i, j) in enumerate(self.pairs)]
      return sum(terms) / len(terms)
    if kind == "vitkd":
      high_t = patches(teacher_features["encoded"], self.teacher)
      dim = high_t.shape[-1]
      align = out["encoded"].shape[-1] != dim
      low_s = [patches(out[f"block{i}"], self.student) for i, _ in self.pairs]
      low_s = jnp.stack([_project(dim, f"vitkd_align_low_{n}")(x) if align else x for n, x in enumerate(low_s)], 1)
      low_t = jnp.stack([patches(teacher_features[f"block{j}"], self.teacher) for _, j in self.pairs], 1)
      high_s = patches(out["encoded"], self.student)
      high_s = _project(dim, "vitkd_align_high")(high_s) if align else high_s
      ratio = hyper.get("mask_ratio", 0.5)
      mask = feature.token_mask(jax.random.uniform(self.make_rng("mask"), high_s.shape[:2]), ratio)
      generated = ViTKDGenerator(tuple(self.student["grid"]), name="vitkd_generator")(high_s, mask)
      return feature.vitkd(low_s, low_t, generated, high_t, mask, **hyper)
    if kind == "ofa":
      branch = lambda stage: OFABranch(stage + 1, self.student["num_classes"], tuple(self.student["grid"]),
                                       self.student["num_prefix_tokens"], name=f"ofa_stage_{stage + 1}")
      return sum(response.ofa(branch(stage)(out[f"block{i}"]), batch["teacher_logits"], batch["label"], **hyper)
                 for stage, (i, _) in enumerate(self.pairs))
    return None

  @nn.compact
  def __call__(self, out, batch):
    return self.response_inputs(out, batch), self.feature_loss(out, batch)
