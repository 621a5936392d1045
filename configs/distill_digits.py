"""A small ViT student distilled on `digits` from the default config's ViT (the quick distillation recipe).

  python -m jaxvit.main --config=configs/default.py --workdir=runs/default            # the teacher, 98%
  python -m jaxvit.main --config=configs/distill_digits.py:kind=kd,teacher=runs/default \\
      --workdir=runs/distill_kd
  python -m jaxvit.distill.experiment --workdir=runs/distill_digits   # every kind x 3 seeds -> docs/distillation.md

`kind=none` trains the same student without a teacher. Arguments: kind, seed, teacher, steps, runlocal.
"""

from configs import common
from configs import default

# the student: half the teacher's width and depth, and half its schedule
STUDENT = dict(img_size=8, patch_size=2, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
               global_pool="avg", class_token=False)


def get_config(arg=None):
  arg = common.parse_arg(arg, kind="kd", seed=0, teacher="runs/default", steps=1500, runlocal=False)
  teacher = default.get_config()
  c = default.get_config()
  c.seed = arg.seed
  c.model.overrides = dict(STUDENT)
  c.total_steps = arg.steps
  c.optimizer.warmup_steps = 50
  c.log_every, c.eval_every, c.checkpoint_every = 100, arg.steps, arg.steps
  if arg.kind != "none":
    c.distill.kind = arg.kind
    c.distill.teacher.update(name=teacher.model.name, overrides=dict(teacher.model.overrides), init_from=arg.teacher)
    if arg.kind == "dkd":
      c.distill.warmup_steps = arg.steps // 12  # DKD's 20 of 240 epochs
  return common.runlocal(c) if arg.runlocal else c
