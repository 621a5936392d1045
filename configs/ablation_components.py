"""Token mixers and position encodings on one small backbone, trained on `digits` in minutes: the survey's
efficient-components ablation. The backbone is the default config's ViT (16 patch tokens, width 64, 4 blocks,
average pooling); only the token mixer and the position encoding change.

  python -m jaxvit.main --config=configs/ablation_components.py:mixer=pooling,pos_embed=none --workdir=runs/abl
  python -m jaxvit.sweep configs/ablation_components.py \
      --grid mixer=attention,mlp,linear,pooling,additive,performer,linformer,posgu \
      pos_embed=learn,sincos,rope_axial,none

Arguments: mixer (jaxvit/layers/token_mixer.py MIXERS), pos_embed (jaxvit/models/vit.py POS_EMBEDS, '+'-joined,
e.g. learn+rope_mixed; RoPE needs mixer=attention), steps, runlocal.
"""

from configs import common
from configs import default


def get_config(arg=None):
  arg = common.parse_arg(arg, mixer="attention", pos_embed="learn", steps=1500, runlocal=False)
  from jaxvit.layers.token_mixer import MIXERS
  if arg.mixer not in MIXERS:
    raise ValueError(f"config argument mixer={arg.mixer!r}; accepted: {MIXERS}")
  c = default.get_config()
  c.model.overrides.update(mixer=arg.mixer, pos_embed=arg.pos_embed)
  import jaxvit
  jaxvit.create_model(c.model.name, **c.model.overrides)  # a bad combination fails here, naming the field
  c.total_steps = arg.steps
  c.optimizer.warmup_steps = max(arg.steps // 15, 1)
  c.log_every, c.eval_every, c.checkpoint_every = 100, arg.steps, arg.steps
  return common.runlocal(c) if arg.runlocal else c
