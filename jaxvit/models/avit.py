"""A-ViT (Yin et al., CVPR 2022, arXiv:2112.07658): a DeiT whose tokens halt adaptively; the official
NVlabs/A-ViT `timm/models/act_vision_transformer.py` and `models_act.py` (`avit_tiny_patch16_224`,
`avit_small_patch16_224`) @ 120c9cb are the files followed (timm has no A-ViT). The halting, its masking and its
losses are `jaxvit.dynamic.avit`.

Parameter names are the ViT's (`patch_embed`, `tokens/cls_token`, `pos_embed`, `encoder/blocks_i`, `norm`,
`head`): A-ViT adds no parameters, so DeiT-T / DeiT-S weights (the official starting point) load unchanged
(`config.init_from` a converted DeiT). `gate_center` is 30 for Tiny and 75 for Small (the README's commands; the
official checkpoints are named `tiny-10-30.pth`, `small-10-75.pth`), `gate_scale` 10. Returns `(logits, out)`;
`out` holds `ponder`, `token_depth`, `halting_mean` (the losses' inputs, `jaxvit.dynamic.avit.act_loss`), `macs`
`[B]` (what each image would cost with halted tokens removed: blocks on their running tokens, plus patch
embedding, final norm and head), `block{i}`, `encoded`, `pre_logits`, `logits`.
"""

import dataclasses

import flax.linen as nn

from jaxvit import layers
from jaxvit.dynamic import avit
from jaxvit.models.vit import ABS_POS_EMBEDS, VisionTransformer
from jaxvit.registry import register_variant
from jaxvit.utils import config_error

# VisionTransformer fields the halting encoder does not take: they must keep their defaults
_FIXED = ("dist_token", "reg_tokens", "init_values", "reduction", "exits", "scan", "return_attention",
          "no_embed_class")


def fixed_field_check(model, fields=_FIXED):
  """Raises the config error for the first ViT field of `fields` set away from its default (the adaptive
  encoders of A-ViT and AdaViT run DeiT's plain blocks only)."""
  defaults = {f.name: f.default for f in dataclasses.fields(VisionTransformer)}
  for field in fields:
    if getattr(model, field) != defaults[field]:
      raise config_error(model, field, getattr(model, field), f"{defaults[field]!r} (the default) for "
                                                              f"{type(model).__name__}")
  if model.mixer != "attention" or model.pos_embed not in ABS_POS_EMBEDS:
    field = "mixer" if model.mixer != "attention" else "pos_embed"
    raise config_error(model, field, getattr(model, field), "'attention'" if field == "mixer" else ABS_POS_EMBEDS)
  if not model.class_token or model.global_pool != "token":
    raise config_error(model, "global_pool", model.global_pool, "'token' with class_token=True (the class token "
                                                                "classifies)")


def head_logits(model, pooled, train: bool):
  """The DeiT head (dropout, then `head`) on the pooled class token."""
  kw = dict(dtype=model.dtype, param_dtype=model.param_dtype)
  pooled = nn.Dropout(model.drop_rate)(pooled, deterministic=not train)
  return layers.dense(model.num_classes, ("embed", "classes"), name="head", kernel_init=nn.initializers.zeros,
                      **kw)(pooled)


def fixed_macs(model, tokens: int) -> int:
  """MACs outside the blocks: the patch embedding, the final LayerNorm on every token, the head on one."""
  patches = model.grid[0] * model.grid[1]
  return patches * 3 * model.patch_size ** 2 * model.embed_dim + 5 * tokens * model.embed_dim + \
      model.embed_dim * model.num_classes


class AViT(VisionTransformer):
  """A DeiT with per-token adaptive computation time (the official `VisionTransformer` with `act_mode=4`)."""
  gate_scale: float = 10.0  # the halting score's gamma (official `--gate_scale`)
  gate_center: float = 30.0  # its beta, subtracted (official `--gate_center`)
  halt_class_token: bool = True  # the official code halts the class token like any other; False: it runs all blocks

  DYNAMIC_LOSS = "avit"  # the `config.dynamic_loss` kind that trains it

  def validate(self):
    super().validate()
    fixed_field_check(self)
    if self.num_classes == 0:
      raise config_error(self, "num_classes", 0, "> 0 (the class token's ACT output feeds the head)")
    if not self.gate_scale > 0:
      raise config_error(self, "gate_scale", self.gate_scale, "> 0")

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = self._embed_tokens(images, train)
    block = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                 proj_drop_rate=self.proj_drop_rate, attn_drop_rate=self.attn_drop_rate, **kw)
    x, out = avit.ACTEncoder(self.depth, block, self.drop_path_rate, self.gate_scale, self.gate_center,
                             self.halt_class_token, self.remat, train, name="encoder")(x)
    out["macs"] = out.pop("block_macs") + fixed_macs(self, x.shape[1])
    out["encoded"] = x = layers.layer_norm(name="norm", **kw)(x)
    out["pre_logits"] = x[:, 0]
    out["logits"] = logits = head_logits(self, x[:, 0], train)
    return logits, out


register_variant(AViT, "avit_tiny_patch16_224", embed_dim=192, depth=12, num_heads=3, gate_center=30.0)
register_variant(AViT, "avit_small_patch16_224", embed_dim=384, depth=12, num_heads=6, gate_center=75.0)
