"""DeiT-Ti / DeiT-S distilled on ImageNet-1k from a converted timm teacher: the DeiT recipe plus a
response loss (Touvron et al. 2021, arXiv:2012.12877, sec. 5; facebookresearch/deit main.py).

  python -m jaxvit.convert --model deit_base_patch16_224 --checkpoint deit_base.safetensors --out ckpt/deit_b
  python -m jaxvit.main --config=configs/deit_distill_imagenet.py:student=tiny,teacher_ckpt=ckpt/deit_b \\
      --workdir=runs/deit_tiny_distilled --config.data.data_dir=/path/to/tensorflow_datasets

`kind=deit_hard` (default) and `deit_soft` train a `deit_*_distilled_*` student (class token on the
labels, distillation token on the teacher, alpha 0.5, tau 1 / 3 as in the paper); any other kind
(kd, dkd, nkd, wttm, ...) trains the plain `deit_*` student with that loss at its official
defaults. DeiT's teacher was RegNetY-16GF (82.9%); here the teacher is any registry model with
converted weights (`teacher=`, default DeiT-B 81.8%).

`feature=` adds a feature objective on the blocks its paper pairs (`FEATURE_LAYERS`):
  - `vitkd` with `kind=nkd`: ViTKD + NKD, `yzd-v/cls_KD` `configs/distillers/imagenet/deit-s3_distill_deit-t_img.py`
    (teacher DeiT III-S `deit3_small_patch16_224`, NKD gamma 1);
  - `tinymim`: the Q-K / V-V relations of the last blocks; the student takes the teacher's head count
    (TinyMIM gives its last block the teacher's heads; jaxvit blocks share one head count);
  - `manifold`: the first and last four blocks (the paper's DeiT-S <- CaiT-S24 pairing, arXiv:2107.01378);
  - `fitnet`: the middle blocks; `attention_map`: the last blocks; `ofa` (with `kind=ofa`): the stage
    branches at blocks 1, 3, 9, 11.
Arguments: student, kind, feature, teacher, teacher_ckpt, batch, epochs, runlocal.
"""

from configs import common
from configs.deit_tiny_imagenet import deit_imagenet
from jaxvit import create_model

STUDENTS = ("tiny", "small")


def _first_and_last(s: int, t: int, k: int = 4):
  """The first and last k blocks of both models (fewer in shallow ones)."""
  k = max(min(k, s // 2, t // 2), 1)
  ends = lambda d: tuple(range(k)) + tuple(range(d - k, d))
  return ends(s), ends(t)


# feature objective -> (student blocks, teacher blocks) as functions of the (student, teacher) depths
FEATURE_LAYERS = {
    "vitkd": lambda s, t: ((0, 1), (0, 1)),
    "tinymim": lambda s, t: ((s - 1,), (t - 1,)),
    "manifold": lambda s, t: _first_and_last(s, t),
    "fitnet": lambda s, t: ((s // 2 - 1,), (t // 2 - 1,)),
    "attention_map": lambda s, t: ((s - 1,), (t - 1,)),
    "ofa": lambda s, t: ((1, 3, 9, 11) if s == 12 else tuple(range(min(s, 4))), ()),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, student="tiny", kind="deit_hard", feature="", teacher="deit_base_patch16_224",
                         teacher_ckpt="", batch=1024, epochs=300, runlocal=False)
  if arg.student not in STUDENTS:
    raise ValueError(f"config argument student={arg.student!r}; accepted: {STUDENTS}")
  if arg.feature and arg.feature not in FEATURE_LAYERS:
    raise ValueError(f"config argument feature={arg.feature!r}; accepted: {tuple(FEATURE_LAYERS)}")
  token = "_distilled" if arg.kind.startswith("deit_") else ""
  recipe = f"batch={arg.batch},epochs={arg.epochs}" + (",runlocal" if arg.runlocal else "")
  c = deit_imagenet(f"deit_{arg.student}{token}_patch16_224", recipe)
  c.distill.kind = arg.kind
  c.distill.teacher.update(name=arg.teacher, init_from=arg.teacher_ckpt)
  if arg.kind == "deit_soft":
    c.distill.hyper = dict(temperature=3.0)  # the paper's soft-distillation tau
  if arg.kind == "nkd":
    c.distill.hyper = dict(gamma=1.0)  # cls_KD's DeiT configs
  if arg.feature:
    teacher = create_model(arg.teacher)
    if arg.feature in ("tinymim", "attention_map"):
      c.model.overrides.num_heads = teacher.num_heads
    student = create_model(c.model.name, **c.model.overrides)
    student_layers, teacher_layers = FEATURE_LAYERS[arg.feature](student.depth, teacher.depth)
    c.distill.feature.update(kind=arg.feature, student_layers=student_layers, teacher_layers=teacher_layers)
  return c
