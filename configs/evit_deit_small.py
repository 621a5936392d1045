"""EViT-DeiT-S on ImageNet-1k (Liang et al. 2022, arXiv:2202.07800; the official youweiliang/evit `run_code.sh`,
`finetune.sh`, `main.py` and `helpers.py`).

  python -m jaxvit.main --config=configs/evit_deit_small.py --workdir=runs/evit_s \\
      --config.data.data_dir=/path/to/tensorflow_datasets
  python -m jaxvit.convert --model deit_small_patch16_224 --checkpoint deit_small.safetensors --out ckpt/deit_s
  python -m jaxvit.main --config=configs/evit_deit_small.py:init=ckpt/deit_s --workdir=runs/evit_s_ft \\
      --config.data.data_dir=/path/to/tensorflow_datasets

DeiT-S keeping `keep` (0.7) of the patch tokens, by the class token's attention, after blocks 3, 6 and 9, the
inattentive rest fused into one token (`--fuse_token`).
- From scratch (`run_code.sh`): the DeiT recipe (configs/deit_tiny_imagenet.py) for 300 epochs at batch 2048 (256 x 8
  GPUs, lr 5e-4 x batch / 512); the keep rate is 1 for 10 epochs, then follows `adjust_keep_rate`'s cosine to `keep`
  over 100 epochs (`config.keep_rate_warmup`, snapped to 5 rates: one compiled step each).
- With `init=` (`finetune.sh`, from DeiT-S weights): 30 epochs at the final keep rate, cosine lr 2e-5 x batch / 512
  to 2e-6 without warm-up, weight decay 1e-6.
The official runs also keep an EMA of the weights (`--model-ema`) but report the raw model, as here.
Arguments: init, keep, batch, epochs (default 300, or 30 with init), runlocal.
"""

from configs import common
from configs.deit_tiny_imagenet import IMAGENET_TRAIN_EXAMPLES, deit_imagenet


def get_config(arg=None):
  arg = common.parse_arg(arg, init="", keep=0.7, batch=2048, epochs=0, runlocal=False)
  epochs = arg.epochs or (30 if arg.init else 300)
  c = deit_imagenet("deit_small_patch16_224", f"batch={arg.batch},epochs={epochs}" + (",runlocal" if arg.runlocal
                                                                                     else ""))
  locations = (0, 1) if arg.runlocal else (3, 6, 9)  # runlocal's DeiT-S has 2 blocks
  c.model.overrides.update(reduction=dict(kind="evit", keep_rate=arg.keep, locations=locations, fuse_token=True))
  steps_per_epoch = max(IMAGENET_TRAIN_EXAMPLES // arg.batch, 1)
  if arg.init:  # finetune.sh
    c.init_from = arg.init
    c.optimizer.update(lr=2e-5 * arg.batch / 512, min_lr=2e-6, weight_decay=1e-6, warmup_steps=0)
  elif arg.runlocal:  # the warm-up squeezed into the 6 steps
    c.keep_rate_warmup = dict(start=1, steps=3, levels=2)
  else:  # run_code.sh: --shrink_start_epoch 10 --shrink_epochs 100
    c.keep_rate_warmup = dict(start=10 * steps_per_epoch, steps=100 * steps_per_epoch, levels=4)
  return c
