"""Shared config pieces: every field the trainer reads, with defaults, and the `runlocal` smoke mode."""

import ml_collections
from ml_collections.config_dict import placeholder


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """`"variant=S,runlocal"` -> ConfigDict(variant="S", runlocal=True) over `defaults` (big_vision's form)."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"config argument {key!r}; accepted: {sorted(defaults)}")
    kind = type(defaults[key])
    out[key] = True if not value and kind is bool else (value.lower() in ("1", "true", "yes") if kind is bool
                                                        else kind(value))
  return out


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(name="deit_tiny_patch16_224", overrides={}))
  c.data = ml_collections.ConfigDict(dict(name="digits", data_dir=placeholder(str), train_split="train",
                                          eval_split="test",
                                          pp_train="decode|flip_lr|normalize", pp_eval="decode|normalize",
                                          shuffle_buffer=50_000, repeated_aug=1,
                                          num_shards=0))  # 0: one data shard per process
  c.batch_size = 128
  c.eval_batch_size = 256
  c.total_steps = 0  # or total_epochs
  c.total_epochs = 0.0
  c.optimizer = ml_collections.ConfigDict(dict(name="adamw", lr=1e-3, min_lr=0.0, weight_decay=0.05,
                                               schedule="cosine", warmup_steps=0, warmup_init_lr=0.0, clip_norm=0.0,
                                               grad_accum=1, layer_decay=1.0,
                                               lr_multipliers={}, freeze_steps={}))
  c.init_from = placeholder(str)  # a `python -m jaxvit.convert` output or a training workdir
  c.label_smoothing = 0.0
  c.mixup = ml_collections.ConfigDict(dict(prob=0.0, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5))
  c.ema_decay = 0.0
  # knowledge distillation (jaxvit.distill): kind, teacher (registry name + weights, or `logits` saved by
  # python -m jaxvit.distill.save_logits), the loss's hyper-parameters, and weights (None: the official
  # recipe's, jaxvit.distill.objective.DEFAULT_WEIGHTS); `feature`: an objective on paired blocks (weight
  # None: jaxvit.distill.objective.FEATURE_WEIGHTS, else 1)
  c.distill = ml_collections.ConfigDict(dict(
      kind="", teacher=dict(name="", init_from="", overrides={}, logits=""), hyper={},
      base_weight=placeholder(float), weight=placeholder(float), warmup_steps=0,
      feature=dict(kind="", student_layers=(), teacher_layers=(), weight=placeholder(float), hyper={})))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  c.sharding_rules = ()  # () = jaxvit.train.mesh.DEFAULT_RULES
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a seconds-long smoke run."""
  c.total_steps, c.total_epochs = 6, 0.0
  c.batch_size = c.eval_batch_size = 16
  c.log_every = c.eval_every = c.checkpoint_every = 3
  c.data.shuffle_buffer = 256
  return c
