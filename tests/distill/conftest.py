import pytest

from jaxvit.train.trainer import train_and_evaluate


@pytest.fixture(scope="session")
def teacher_workdir(tmp_path_factory, data_dir):
  """A 60-step digits teacher (ViT dim 16, depth 1): its workdir and config."""
  from configs import common
  c = common.base_config()
  c.model.name = "vit_tiny_patch16_224"
  c.model.overrides = dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2)
  c.data.update(name="digits", data_dir=data_dir, pp_train="decode", pp_eval="decode", shuffle_buffer=2000)
  c.batch_size, c.eval_batch_size, c.total_steps = 32, 64, 60
  c.optimizer.update(lr=3e-3, warmup_steps=5)
  c.log_every = c.eval_every = c.checkpoint_every = 60
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train_and_evaluate(c, workdir)
  return workdir, c


@pytest.fixture
def distill_config(tiny_config, teacher_workdir):
  """`make(kind, **distill_fields)`: the tiny student config distilled from the teacher above."""
  def make(kind, **distill):
    workdir, teacher_config = teacher_workdir
    tiny_config.distill.kind = kind
    tiny_config.distill.teacher.update(name=teacher_config.model.name, init_from=workdir,
                                       overrides=dict(teacher_config.model.overrides))
    tiny_config.distill.update(distill)
    return tiny_config
  return make
