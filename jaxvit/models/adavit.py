"""AdaViT (Meng et al., CVPR 2022, arXiv:2111.15668) on DeiT: a decision network per block chooses the patches,
attention heads and residual branches each image uses; the official MengLcool/AdaViT `models/ada_t2t_vit.py`
(`AdaStepT2T_ViT(use_t2t=False)`: `ada_step_deit_tiny_patch16_224`, `ada_step_deit_small_patch16_224`) with
`models/ada_transformer_block.py` @ 9857f92 are the files followed (timm has no AdaViT). The decisions, masks and
the usage loss are `jaxvit.dynamic.adavit`.

Parameter names are the ViT's plus `encoder/blocks_i/{token_select, head_select, layer_select}` (the official
`blocks.i.attn.token_select.mlp_head`, `blocks.i.head_select.mlp_head`, `blocks.i.layer_select.mlp_head`), which
start from their initialisation when a DeiT is loaded (`config.init_from`; the official run starts from DeiT
weights with its separate `query` / `key` / `value` split from DeiT's `qkv`, the same numbers). The official model
keeps its position embedding frozen (`requires_grad=False`, then loaded from DeiT); here it is a parameter as in
DeiT (freeze it with `config.optimizer.lr_multipliers`). Returns `(logits, out)`; `out` holds `head_select`,
`layer_select`, `token_select` and the logits of the first two (the usage loss's inputs,
`jaxvit.dynamic.adavit.usage_loss`), `macs` `[B]` (what each image executes with its decisions: the blocks'
`jaxvit.dynamic.adavit.block_macs`, plus patch embedding, final norm and head), `block{i}`, `encoded`,
`pre_logits`, `logits`.
"""

import flax.linen as nn

from jaxvit import layers
from jaxvit.dynamic import adavit
from jaxvit.models.avit import fixed_field_check, fixed_macs, head_logits
from jaxvit.models.vit import VisionTransformer
from jaxvit.registry import register_variant
from jaxvit.utils import config_error

_DECISIONS = ("token_select", "head_select", "layer_select")


class AdaViT(VisionTransformer):
  """A DeiT with AdaViT's per-image usage policies (the README's `--ada-head --ada-layer --ada-token-with-mlp`)."""
  ada_head: bool = True  # select attention heads
  ada_layer: bool = True  # select each block's attention and MLP branches (the paper's block usage)
  ada_token: bool = True  # select patch tokens
  token_mlp: bool = True  # the token decisions mask the MLP too (`--ada-token-with-mlp`; False: `--ada-token`)
  keep_layers: int = 1  # blocks before head / block selection starts (`--keep-layers`)

  DYNAMIC_LOSS = "adavit"  # the `config.dynamic_loss` kind that trains it

  def validate(self):
    super().validate()
    fixed_field_check(self)
    if not 0 <= self.keep_layers < self.depth:
      raise config_error(self, "keep_layers", self.keep_layers, f"0..{self.depth - 1} (blocks without head and "
                                                                f"block selection)")
    if not (self.ada_head or self.ada_layer or self.ada_token):
      raise config_error(self, "ada_head", self.ada_head, "True, or ada_layer / ada_token (a DeiT selects nothing)")

  @property
  def reduction_params(self) -> tuple[str, ...]:
    """Path prefixes of the decision network's parameters (a pretrained DeiT has none: they start from init)."""
    return tuple(f"encoder/blocks_{i}/{name}" for i in range(self.depth) for name in _DECISIONS)

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = self._embed_tokens(images, train)
    block = dict(num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                 proj_drop_rate=self.proj_drop_rate, attn_drop_rate=self.attn_drop_rate, token_mlp=self.token_mlp,
                 **kw)
    x, out = adavit.AdaEncoder(self.depth, block, self.drop_path_rate, self.keep_layers, self.ada_head,
                               self.ada_layer, self.ada_token, self.remat, train, name="encoder")(x)
    out["macs"] = out.pop("block_macs") + fixed_macs(self, x.shape[1])
    out["encoded"] = x = layers.layer_norm(name="norm", **kw)(x)
    out["pre_logits"] = x[:, 0]
    out["logits"] = logits = head_logits(self, x[:, 0], train)
    return logits, out


register_variant(AdaViT, "adavit_deit_tiny_patch16_224", embed_dim=192, depth=12, num_heads=3)
register_variant(AdaViT, "adavit_deit_small_patch16_224", embed_dim=384, depth=12, num_heads=6)
