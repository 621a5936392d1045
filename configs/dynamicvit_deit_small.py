"""DynamicViT-DeiT-S on ImageNet-1k from converted DeiT-S weights (Rao et al. 2021, arXiv:2106.02034;
`raoyongming/DynamicViT` README and `main.py`).

  python -m jaxvit.convert --model deit_small_patch16_224 --checkpoint deit_small.safetensors --out ckpt/deit_s
  python -m jaxvit.main --config=configs/dynamicvit_deit_small.py:init=ckpt/deit_s --workdir=runs/dynamicvit_s \\
      --config.data.data_dir=/path/to/tensorflow_datasets

The student is DeiT-S with score predictors before blocks 3, 6, 9 keeping rho, rho^2, rho^3 of the
patch tokens (`rho=`, default 0.7), initialised from DeiT-S; the teacher is the same unpruned DeiT-S.
Loss: CE + 0.5 KL(teacher || student) on the logits + 2 x keep-ratio loss + 0.5 x MSE to the teacher's
kept final tokens. 30 epochs, AdamW lr 1e-3 x batch / 1024 with 5 warm-up epochs, weight decay 0.05;
the backbone learns at 0.01 x the rate of the predictors (`--lr_scale 0.01`) and is frozen for the first 5
epochs (`fix_step`), the class token and position embedding stay frozen (`optim_factory.py`); DeiT's
augmentation.
Arguments: init, rho, batch, epochs, runlocal.
"""

from configs import common
from configs.deit_tiny_imagenet import IMAGENET_TRAIN_EXAMPLES, deit_imagenet


def get_config(arg=None):
  arg = common.parse_arg(arg, init="", rho=0.7, batch=1024, epochs=30, runlocal=False)
  c = deit_imagenet("deit_small_patch16_224",
                    f"batch={arg.batch},epochs={arg.epochs}" + (",runlocal" if arg.runlocal else ""))
  locations = (0, 1) if arg.runlocal else (3, 6, 9)  # runlocal's DeiT-S has 2 blocks
  c.model.overrides.update(drop_path_rate=0.0, reduction=dict(kind="dynamicvit", keep_rate=arg.rho,
                                                              locations=locations))
  c.init_from = arg.init or None
  steps_per_epoch = max(IMAGENET_TRAIN_EXAMPLES // arg.batch, 1)
  c.optimizer.update(lr=1e-3 * arg.batch / 1024, min_lr=1e-6,
                     warmup_steps=(1 if arg.runlocal else 5) * steps_per_epoch,
                     lr_multipliers=dict(score_predictor=1.0, cls_token=0.0, pos_embed=0.0, default=0.01),
                     freeze_steps=dict(score_predictor=0, default=(1 if arg.runlocal else 5) * steps_per_epoch))
  c.distill.update(kind="kd", hyper=dict(temperature=1.0), base_weight=1.0, weight=0.5)
  c.distill.teacher.update(name="deit_small_patch16_224", init_from=arg.init,
                           overrides=dict(depth=2) if arg.runlocal else {})
  c.distill.feature.update(kind="dynamicvit", student_layers=locations, weight=1.0,
                           hyper=dict(keep_rate=arg.rho, ratio_weight=2.0, token_weight=0.5))
  if arg.runlocal:
    c.optimizer.warmup_steps = 1
  return c
