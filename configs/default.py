"""A small ViT trained from scratch on `digits` (scikit-learn's 8x8 digits), offline, on a CPU.

  python -m jaxvit.main --config=configs/default.py --workdir=runs/default
  python -m jaxvit.main --config=configs/default.py:runlocal --workdir=/tmp/smoke   # seconds
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model.name = "vit_tiny_patch16_224"
  c.model.overrides = dict(img_size=8, patch_size=2, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
                           global_pool="avg", class_token=False)
  c.data.name = "digits"
  c.data.pp_train = "decode|random_resized_crop(8, scale=(0.6, 1.0), ratio=(0.8, 1.25))|normalize(0.5, 0.5)"
  c.data.pp_eval = "decode|normalize(0.5, 0.5)"
  c.batch_size = 128
  c.total_steps = 3000
  c.optimizer.update(lr=2e-3, weight_decay=0.05, warmup_steps=200, clip_norm=1.0)
  c.label_smoothing = 0.1
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return common.runlocal(c) if arg.runlocal else c
