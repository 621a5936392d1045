"""Token reduction on `digits` in a few minutes (the quick dynamic-networks recipe): the default
config's ViT with a class token, 16 patches, trained with `kind=` tome, evit, dynamicvit, ats, patch_merger or
evo_vit (Evo-ViT: 8 of the 16 patch tokens run block 1, re-ranked 8 run blocks 2-3; the official average-pool head).

  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=none --workdir=runs/dyn_none
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=tome --workdir=runs/dyn_tome
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=dynamicvit,init=runs/dyn_none --workdir=runs/dyn_dvit
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=ats --workdir=runs/dyn_ats
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=patch_merger --workdir=runs/dyn_pm
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=exits --workdir=runs/dyn_exits
  python -m jaxvit.early_exit --config=configs/dynamic_digits.py:kind=exits --workdir=runs/dyn_exits --rule entropy

ToMe merges 2 tokens per block (16 -> 8 by the last block); EViT keeps 0.7 of the tokens after blocks
1 and 2, its keep rate warmed up from 1 as the official recipe does (a cosine after a constant 1/15 of the run,
over a third of it, snapped to 4 levels: 5 compiled steps); DynamicViT (rho 0.7 at blocks 1, 2) starts from `init=` (a `kind=none` run), which is also its
unpruned teacher, with its official loss and the backbone at 0.01 x the predictors' learning rate.
ATS samples at blocks 1 and 2 (n_tokens=9: the class token and at most 8 distinct patches, duplicates masked);
PatchMerger merges the 16 patches into 8 learned combinations before block 2, on a class-token-free ViT with
average pooling (the paper's setting).
`kind=exits` is depth adaptation instead: internal classifiers after blocks 1 and 2 (of 4), trained jointly
with the final head, and distilled from it with `exit_distill=` (weight; temperature 1); `exit_head=lgvit` puts
LGViT's local perception and global aggregation heads there instead of linear ones, and `exit_weights=depth`
weighs each head's loss by the blocks it ran (LGViT's first stage). `kind=cf_vit` is CF-ViT on the same backbone: a
coarse pass on the 4 px image (2x2 tokens), then the 8 px one with the coarse stage's 2 most attended tokens refined
(1 + 8 + 2 tokens), trained with CF-ViT's loss (fine cross-entropy + KL of the coarse logits to the fine ones); the
informative selection is on from the start (the ImageNet recipe, configs/cf_vit_deit_small.py, switches it on
for the last third, as the official one).
Arguments: kind, init, steps, exit_distill, exit_head, exit_weights, runlocal.
"""

from configs import common
from configs import default

REDUCTIONS = {"none": None, "tome": dict(kind="tome", r=2),
              "evit": dict(kind="evit", keep_rate=0.7, locations=(1, 2), fuse_token=True),
              "dynamicvit": dict(kind="dynamicvit", keep_rate=0.7, locations=(1, 2)),
              "ats": dict(kind="ats", n_tokens=9, locations=(1, 2)),
              "patch_merger": dict(kind="patch_merger", tokens=8, location=2),
              "evo_vit": dict(kind="evo_vit", keep_rate=0.5, stages=((1, 2), (2, 4)))}


def get_config(arg=None):
  arg = common.parse_arg(arg, kind="tome", init="", steps=1500, exit_distill=0.0, exit_head="linear",
                         exit_weights="equal", runlocal=False)
  kinds = tuple(REDUCTIONS) + ("exits", "cf_vit")
  if arg.kind not in kinds:
    raise ValueError(f"config argument kind={arg.kind!r}; accepted: {kinds}")
  c = default.get_config()
  c.model.overrides.update(class_token=True, global_pool="token", reduction=REDUCTIONS.get(arg.kind))
  if arg.kind == "patch_merger":  # the paper's models: no class token, global average pooling
    c.model.overrides.update(class_token=False, global_pool="avg")
  if arg.kind == "evo_vit":  # the official head: the average of all patch tokens, then LayerNorm
    c.model.overrides.update(global_pool="avg", fc_norm=True)
  if arg.kind == "cf_vit":
    c.model.name = "cf_deit_small_224"
    c.model.overrides.update(coarse_size=4, ema_blocks=(1, 2, 3), reduction=None)
    c.exit_loss = dict(weights=(0.0, 1.0), distill_weight=1.0, temperature=1.0)
  if arg.kind == "exits":
    if arg.exit_weights not in ("equal", "depth"):
      raise ValueError(f"config argument exit_weights={arg.exit_weights!r}; accepted: ('equal', 'depth')")
    c.model.overrides.exits = dict(blocks=(1, 2), head=arg.exit_head)
    c.exit_loss = dict(distill_weight=arg.exit_distill, temperature=1.0)
    if arg.exit_weights == "depth":
      c.exit_loss.weights = "depth"
  c.total_steps = arg.steps
  c.optimizer.warmup_steps = max(arg.steps // 15, 1)
  c.log_every, c.eval_every, c.checkpoint_every = 100, arg.steps, arg.steps
  if arg.kind == "evit":
    c.keep_rate_warmup = dict(start=arg.steps // 15, steps=arg.steps // 3, levels=4)
  if arg.kind == "dynamicvit":
    if not arg.init:
      raise ValueError("config argument init= is required for kind=dynamicvit (a kind=none workdir: its weights "
                       "and its unpruned teacher)")
    c.init_from = arg.init
    c.optimizer.lr_multipliers = dict(score_predictor=1.0, default=0.01)
    c.distill.update(kind="kd", hyper=dict(temperature=1.0), base_weight=1.0, weight=0.5)
    c.distill.teacher.update(name=c.model.name, init_from=arg.init,
                             overrides={k: v for k, v in c.model.overrides.items() if k != "reduction"})
    c.distill.feature.update(kind="dynamicvit", student_layers=(1, 2), weight=1.0, hyper=dict(keep_rate=0.7))
  return common.runlocal(c) if arg.runlocal else c
