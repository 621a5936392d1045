"""DeiT-Ti / DeiT-S distilled on ImageNet-1k from a converted timm teacher: the DeiT recipe plus a
response loss (Touvron et al. 2021, arXiv:2012.12877, sec. 5; facebookresearch/deit main.py).

  python -m jaxvit.convert --model deit_base_patch16_224 --checkpoint deit_base.safetensors --out ckpt/deit_b
  python -m jaxvit.main --config=configs/deit_distill_imagenet.py:student=tiny,teacher_ckpt=ckpt/deit_b \\
      --workdir=runs/deit_tiny_distilled --config.data.data_dir=/path/to/tensorflow_datasets

`kind=deit_hard` (default) and `deit_soft` train a `deit_*_distilled_*` student (class token on the
labels, distillation token on the teacher, alpha 0.5, tau 1 / 3 as in the paper); any other kind
(kd, dkd, nkd, wttm, ...) trains the plain `deit_*` student with that loss at its official
defaults. DeiT's teacher was RegNetY-16GF (82.9%); here the teacher is any registry model with
converted weights (`teacher=`, default DeiT-B 81.8%). Arguments: student, kind, teacher,
teacher_ckpt, batch, epochs, runlocal.
"""

from configs import common
from configs.deit_tiny_imagenet import deit_imagenet

STUDENTS = ("tiny", "small")


def get_config(arg=None):
  arg = common.parse_arg(arg, student="tiny", kind="deit_hard", teacher="deit_base_patch16_224",
                         teacher_ckpt="", batch=1024, epochs=300, runlocal=False)
  if arg.student not in STUDENTS:
    raise ValueError(f"config argument student={arg.student!r}; accepted: {STUDENTS}")
  token = "_distilled" if arg.kind.startswith("deit_") else ""
  recipe = f"batch={arg.batch},epochs={arg.epochs}" + (",runlocal" if arg.runlocal else "")
  c = deit_imagenet(f"deit_{arg.student}{token}_patch16_224", recipe)
  c.distill.kind = arg.kind
  c.distill.teacher.update(name=arg.teacher, init_from=arg.teacher_ckpt)
  if arg.kind == "deit_soft":
    c.distill.hyper = dict(temperature=3.0)  # the paper's soft-distillation tau
  return c
