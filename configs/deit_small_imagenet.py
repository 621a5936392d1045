"""DeiT-S on ImageNet-1k from scratch: the DeiT recipe (see configs/deit_tiny_imagenet.py).

  python -m jaxvit.main --config=configs/deit_small_imagenet.py --workdir=runs/deit_small \
      --config.data.data_dir=/path/to/tensorflow_datasets
"""

from configs.deit_tiny_imagenet import deit_imagenet


def get_config(arg=None):
  return deit_imagenet("deit_small_patch16_224", arg)
