import pytest


@pytest.fixture
def tiny_config(data_dir):
  """A seconds-long digits run on a 1-block ViT."""
  from configs import common
  c = common.base_config()
  c.model.name = "vit_tiny_patch16_224"
  c.model.overrides = dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, drop_path_rate=0.1)
  c.data.update(name="digits", data_dir=data_dir, pp_train="decode|random_resized_crop(8, scale=(0.5, 1))|flip_lr",
                pp_eval="decode", shuffle_buffer=2000)
  c.batch_size, c.eval_batch_size = 32, 64
  c.total_steps = 8
  c.log_every, c.eval_every, c.checkpoint_every = 2, 4, 4
  c.optimizer.update(lr=3e-3, warmup_steps=2)
  return c
