"""CF-ViT (DeiT-S, 7x7 coarse tokens) on ImageNet-1k from scratch (Chen et al. 2023, arXiv:2211.03992; the official
ChenMnZ/CF-ViT `main_deit.py` and `engine_deit.py`).

  python -m jaxvit.main --config=configs/cf_vit_deit_small.py --workdir=runs/cf_deit_s \\
      --config.data.data_dir=/path/to/tensorflow_datasets
  python -m jaxvit.early_exit --config=configs/cf_vit_deit_small.py --workdir=runs/cf_deit_s --rule confidence \\
      --thresholds 0.5,0.6,0.7,0.8,0.9 --data-dir /path/to/tensorflow_datasets

The DeiT recipe (configs/deit_tiny_imagenet.py: 300 epochs, AdamW, Mixup / CutMix, RandAugment, ...); the loss is
the fine stage's cross-entropy plus KL(softmax(fine), stopped || coarse), batch mean; the informative selection is
switched on after epoch 200, as the official `main_deit.py` does. Arguments: batch, epochs, runlocal.
"""

from configs import common
from configs.deit_tiny_imagenet import IMAGENET_TRAIN_EXAMPLES, deit_imagenet


def get_config(arg=None):
  arg = common.parse_arg(arg, batch=1024, epochs=300, runlocal=False)
  c = deit_imagenet("cf_deit_small_224", f"batch={arg.batch},epochs={arg.epochs}" + (",runlocal" if arg.runlocal
                                                                                     else ""))
  if arg.runlocal:  # 64 px, two blocks
    c.model.overrides.update(coarse_size=32, ema_blocks=(0, 1))
  c.exit_loss = dict(weights=(0.0, 1.0), distill_weight=1.0, temperature=1.0)
  switch = int(2 / 3 * arg.epochs * IMAGENET_TRAIN_EXAMPLES // arg.batch) if not arg.runlocal else c.total_steps // 2
  c.model_schedule = ((0, dict(informative_selection=False)), (switch, dict(informative_selection=True)))
  return c
