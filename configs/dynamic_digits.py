"""Token reduction on `digits` in a few minutes (the quick dynamic-networks recipe): the default
config's ViT with a class token, 16 patches, trained with `kind=` tome, evit, dynamicvit, ats, patch_merger,
idlevit, tofu, tcformer or evo_vit (Evo-ViT: 8 of the 16 patch tokens run block 1, re-ranked 8 run blocks 2-3; the
official average-pool head).

  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=none --workdir=runs/dyn_none
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=tome --workdir=runs/dyn_tome
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=dynamicvit,init=runs/dyn_none --workdir=runs/dyn_dvit
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=ats --workdir=runs/dyn_ats
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=patch_merger --workdir=runs/dyn_pm
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=idlevit,init=runs/dyn_none --workdir=runs/dyn_idle
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=tofu --workdir=runs/dyn_tofu         # or tcformer
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=exits --workdir=runs/dyn_exits
  python -m jaxvit.main --config=configs/dynamic_digits.py:kind=avit --workdir=runs/dyn_avit        # or adavit
  python -m jaxvit.early_exit --config=configs/dynamic_digits.py:kind=exits --workdir=runs/dyn_exits --rule entropy

ToMe merges 2 tokens per block (16 -> 8 by the last block); EViT keeps 0.7 of the tokens after blocks
1 and 2, its keep rate warmed up from 1 as the official recipe does (a cosine after a constant 1/15 of the run,
over a third of it, snapped to 4 levels: 5 compiled steps); DynamicViT (rho 0.7 at blocks 1, 2) starts from `init=` (a `kind=none` run), which is also its
unpruned teacher, with its official loss and the backbone at 0.01 x the predictors' learning rate.
ATS samples at blocks 1 and 2 (n_tokens=9: the class token and at most 8 distinct patches, duplicates masked);
PatchMerger merges the 16 patches into 8 learned combinations before block 2, on a class-token-free ViT with
average pooling (the paper's setting).
IdleViT runs blocks 1, 2, 3 on the class token and the 11, 7, 5 patches it attends to most, the others idle (kept,
unchanged), fine-tuning `init=` (a `kind=none` run) with the official token cut loss (weight 20); ToFu removes 2
tokens per block, pruning in blocks 0-2 and MLERP-merging in block 3; TCFormer's DPC-kNN clustering merges the 16
patches into 4 before block 2. ToFu and TCFormer train from scratch or, with `init=`, fine-tune a `kind=none` run
(the test does, 60 steps).
`kind=exits` is depth adaptation instead: internal classifiers after blocks 1 and 2 (of 4), trained jointly
with the final head, and distilled from it with `exit_distill=` (weight; temperature 1); `exit_head=lgvit` puts
LGViT's local perception and global aggregation heads there instead of linear ones, and `exit_weights=depth`
weighs each head's loss by the blocks it ran (LGViT's first stage). `kind=cf_vit` is CF-ViT on the same backbone: a
coarse pass on the 4 px image (2x2 tokens), then the 8 px one with the coarse stage's 2 most attended tokens refined
(1 + 8 + 2 tokens), trained with CF-ViT's loss (fine cross-entropy + KL of the coarse logits to the fine ones); the
informative selection is on from the start (the ImageNet recipe, configs/cf_vit_deit_small.py, switches it on
for the last third, as the official one).
`kind=avit` and `kind=adavit` adapt the computation per image instead, with masks (static shapes): A-ViT's tokens
halt (gate 10 / 10 on this small model, official 10 / 30 on DeiT-T; ponder weight 0.005 and prior 0.01 towards a
depth of 2 of 4, official 5e-4 / 0.001 over 100 ImageNet epochs), AdaViT's decision network picks the heads and
the attention / MLP branches each image uses (its usage loss towards half of each, the official targets and
weights; patch selection is off here: with 16 patches and its 0.6 threshold it starts from about 2 patches per
block and needs a longer run, `config.model.overrides.ada_token=True`); both print the GMACs the eval images
executed (`GMACs executed`, `eval_gmacs` in the summary). With `init=` (a `kind=none` run) they start from its
weights, as the official recipes start from DeiT.
`exit_stage=2` (with `exit_head=lgvit`, `init=` the first-stage workdir) is LGViT's second stage: the backbone frozen
(`optimizer.lr_multipliers`), the exits distilled from it by the official loss (`lgvit_distill.official_exit_loss`:
0.7 CE + 0.3 KL at T = 2 per exit, the heterogeneous and homogeneous feature terms at 0.01).
Arguments: kind, init, steps, exit_distill, exit_head, exit_weights, exit_stage, runlocal.
"""

from configs import common
from configs import default
from jaxvit.dynamic import lgvit_distill

DIGITS_CLASSES = 10

REDUCTIONS = {"none": None, "tome": dict(kind="tome", r=2),
              "evit": dict(kind="evit", keep_rate=0.7, locations=(1, 2), fuse_token=True),
              "dynamicvit": dict(kind="dynamicvit", keep_rate=0.7, locations=(1, 2)),
              "ats": dict(kind="ats", n_tokens=9, locations=(1, 2)),
              "patch_merger": dict(kind="patch_merger", tokens=8, location=2),
              "evo_vit": dict(kind="evo_vit", keep_rate=0.5, stages=((1, 2), (2, 4))),
              "idlevit": dict(kind="idlevit", keep_rate=0.7, locations=(1, 2, 3)),
              "tofu": dict(kind="tofu", r=2, merge_from=3),
              "tcformer": dict(kind="tcformer", location=2, tokens=4)}

# A-ViT / AdaViT: (model, overrides, config.dynamic_loss)
ADAPTIVE = {"avit": ("avit_tiny_patch16_224", dict(gate_center=10.0),
                     dict(kind="avit", ponder_weight=0.005, distr_prior_weight=0.01, target_depth=2)),
            "adavit": ("adavit_deit_tiny_patch16_224", dict(ada_token=False), dict(kind="adavit"))}


def get_config(arg=None):
  arg = common.parse_arg(arg, kind="tome", init="", steps=1500, exit_distill=0.0, exit_head="linear",
                         exit_weights="equal", exit_stage=1, runlocal=False)
  kinds = tuple(REDUCTIONS) + ("exits", "cf_vit") + tuple(ADAPTIVE)
  if arg.kind not in kinds:
    raise ValueError(f"config argument kind={arg.kind!r}; accepted: {kinds}")
  c = default.get_config()
  c.model.overrides.update(class_token=True, global_pool="token", reduction=REDUCTIONS.get(arg.kind))
  if arg.kind == "patch_merger":  # the paper's models: no class token, global average pooling
    c.model.overrides.update(class_token=False, global_pool="avg")
  if arg.kind == "idlevit":  # the official token cut loss (weight 20), fine-tuning as the official recipe
    if not arg.init:
      raise ValueError("config argument init= is required for kind=idlevit (a kind=none workdir: IdleViT fine-tunes a "
                       "trained ViT; from scratch the token cut loss holds digits at about 20% top-1)")
    c.dynamic_loss = dict(kind="idlevit", cut_weight=20.0)
  if arg.kind in ("idlevit", "tofu", "tcformer") and arg.init:  # fine-tune a kind=none run (TCFormer's CTM: new)
    c.init_from = arg.init
  if arg.kind == "evo_vit":  # the official head: the average of all patch tokens, then LayerNorm
    c.model.overrides.update(global_pool="avg", fc_norm=True)
  if arg.kind == "cf_vit":
    c.model.name = "cf_deit_small_224"
    c.model.overrides.update(coarse_size=4, ema_blocks=(1, 2, 3), reduction=None)
    c.exit_loss = dict(weights=(0.0, 1.0), distill_weight=1.0, temperature=1.0)
  if arg.kind in ADAPTIVE:
    name, overrides, c.dynamic_loss = ADAPTIVE[arg.kind]
    c.model.name = name
    c.model.overrides.update(overrides)
    if arg.init:
      c.init_from = arg.init
  if arg.kind == "exits":
    if arg.exit_weights not in ("equal", "depth"):
      raise ValueError(f"config argument exit_weights={arg.exit_weights!r}; accepted: ('equal', 'depth')")
    c.model.overrides.exits = dict(blocks=(1, 2), head=arg.exit_head)
    c.exit_loss = dict(distill_weight=arg.exit_distill, temperature=1.0)
    if arg.exit_weights == "depth":
      c.exit_loss.weights = "depth"
    if arg.exit_stage not in (1, 2):
      raise ValueError(f"config argument exit_stage={arg.exit_stage!r}; accepted: (1, 2)")
    if arg.exit_stage == 2:  # LGViT's second stage: the exits distilled from the frozen backbone (official recipe)
      if arg.exit_head != "lgvit" or not arg.init:
        raise ValueError("config argument exit_stage=2 needs exit_head=lgvit and init= (a first-stage workdir); "
                         f"got exit_head={arg.exit_head!r}, init={arg.init!r}")
      c.init_from = arg.init
      c.label_smoothing = 0.0
      c.exit_loss = lgvit_distill.official_exit_loss(num_exits=2, num_classes=DIGITS_CLASSES)
      c.optimizer.lr_multipliers = dict(exit_=1.0, default=0.0)
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
