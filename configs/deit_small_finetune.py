"""Fine-tune converted timm DeiT-S weights on CIFAR-10 or Imagenette at 224x224.

  python -m jaxvit.convert --model deit_small_patch16_224 --checkpoint deit_small.safetensors --out ckpt/deit_s
  python -m jaxvit.main --config=configs/deit_small_finetune.py:init=ckpt/deit_s,dataset=cifar10 \
      --workdir=runs/deit_s_cifar10 --config.data.data_dir=/path/to/tensorflow_datasets
  python -m jaxvit.main --config=configs/deit_small_finetune.py:init=ckpt/deit_s,runlocal --workdir=/tmp/smoke

A common transfer recipe (not a paper's): 10 epochs of AdamW at 1e-4 x batch / 128 with one warm-up
epoch, weight decay 0.05, layer-wise decay 0.65 (BEiT), drop path 0.1, RandAugment m9, label
smoothing 0.1. The 1000-class head is replaced by a zero-initialised one for the new classes.
"""

from configs import common

TRAIN_EXAMPLES = {"cifar10": 50_000, "imagenette": 9_469}
EVAL_SPLIT = {"cifar10": "test", "imagenette": "validation"}


def get_config(arg=None):
  arg = common.parse_arg(arg, init="", dataset="cifar10", batch=128, epochs=10, runlocal=False)
  if arg.dataset not in TRAIN_EXAMPLES:
    raise ValueError(f"config argument dataset={arg.dataset!r}; accepted: {sorted(TRAIN_EXAMPLES)}")
  size = 32 if arg.runlocal else 224
  c = common.base_config()
  c.model.name = "deit_small_patch16_224"
  c.model.overrides = dict(img_size=size, drop_path_rate=0.1)
  c.init_from = arg.init or None
  c.data.update(name=arg.dataset, train_split="train", eval_split=EVAL_SPLIT[arg.dataset],
                pp_train=f"decode|random_resized_crop({size}, scale=(0.25, 1.0))|flip_lr|randaugment(2, 9, 0.5)|"
                         f"normalize",
                pp_eval=f"decode|resize({size})|normalize")
  c.batch_size, c.eval_batch_size = arg.batch, 2 * arg.batch
  c.total_epochs = float(arg.epochs)
  steps_per_epoch = TRAIN_EXAMPLES[arg.dataset] // arg.batch
  c.optimizer.update(name="adamw", lr=1e-4 * arg.batch / 128, min_lr=1e-6, weight_decay=0.05, layer_decay=0.65,
                     warmup_steps=steps_per_epoch, clip_norm=1.0)
  c.label_smoothing = 0.1
  c.log_every, c.eval_every, c.checkpoint_every = 50, steps_per_epoch, steps_per_epoch
  return common.runlocal(c) if arg.runlocal else c
