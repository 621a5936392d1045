"""DeiT-Ti on ImageNet-1k from scratch: the DeiT recipe (Touvron et al. 2021, arXiv:2012.12877, Table 9;
facebookresearch/deit main.py defaults).

  python -m jaxvit.main --config=configs/deit_tiny_imagenet.py --workdir=runs/deit_tiny \
      --config.data.data_dir=/path/to/tensorflow_datasets
  python -m jaxvit.main --config=configs/deit_tiny_imagenet.py:runlocal --workdir=/tmp/smoke   # seconds

300 epochs, AdamW lr 5e-4 x batch / 512, weight decay 0.05, 5 warm-up epochs from 1e-6, cosine to
1e-5, RandAugment m9-mstd0.5, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, random erasing 0.25,
repeated augmentation 3, drop path 0.1. DeiT also keeps an EMA of the weights but reports the raw
model; set `--config.ema_decay=0.99996` to track it (evaluation then uses the EMA).
"""

from configs import common

IMAGENET_TRAIN_EXAMPLES = 1_281_167


def deit_imagenet(model: str, arg=None):
  arg = common.parse_arg(arg, runlocal=False, batch=1024, epochs=300)
  size = 64 if arg.runlocal else 224
  c = common.base_config()
  c.model.name = model
  c.model.overrides = dict(drop_path_rate=0.1, img_size=size)
  c.data.update(name="imagenet2012", train_split="train", eval_split="validation", repeated_aug=3,
                pp_train=f"decode|random_resized_crop({size})|flip_lr|randaugment(2, 9, 0.5)|normalize|"
                         f"random_erase(0.25)",
                pp_eval=f"decode|center_crop({size}, 0.875)|normalize")
  c.batch_size = c.eval_batch_size = arg.batch
  c.total_epochs = float(arg.epochs)
  steps_per_epoch = IMAGENET_TRAIN_EXAMPLES // arg.batch
  c.optimizer.update(name="adamw", lr=5e-4 * arg.batch / 512, min_lr=1e-5, weight_decay=0.05,
                     schedule="cosine", warmup_steps=5 * steps_per_epoch, warmup_init_lr=1e-6)
  c.label_smoothing = 0.1
  c.mixup.update(prob=1.0, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
  c.log_every, c.eval_every, c.checkpoint_every = 100, steps_per_epoch * 5, steps_per_epoch
  if arg.runlocal:
    c.model.overrides.update(depth=2)
  return common.runlocal(c) if arg.runlocal else c


def get_config(arg=None):
  return deit_imagenet("deit_tiny_patch16_224", arg)
