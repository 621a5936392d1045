"""CPVT (`pos_embed="peg"` on jaxvit's ViT, the `cpvt_*` models): where the PEGs go, the parameter counts the
paper's description gives, the same weights at other input sizes, the zero padding's absolute position, config
errors, bfloat16, and logits equal to timm's ViT with the authors' PEG (`PosCNN` of Meituan-AutoML/Twins gvt.py, the
only CPVT code released) inserted where the paper puts it; `-m parity_all`: fvcore on that reference equals the
registered counts."""

import ast
import os
import subprocess

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert import convert_state_dict
from fast_jit import jit_fast
from published import PUBLISHED

TWINS = "/work/.mirror/Meituan-AutoML+Twins/repo"
TWINS_COMMIT = "c1ff6714969ad8ef330e75cf97bd310f7488f529"
SMALL = dict(img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2, num_classes=5)  # a 4x4 grid


def random_params(model, scale=0.2):
  images = jnp.zeros(jaxvit.utils.input_shape(model))
  shapes = flax.linen.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), images)))["params"]
  rs = np.random.RandomState(0)
  return jax.tree.map(lambda s: (scale * rs.standard_normal(s.shape)).astype(np.float32), shapes)


def test_pegs_follow_the_chosen_blocks_and_replace_the_position_embedding():
  for name, blocks, prefix in (("cpvt_ti_224", (0,), True), ("cpvt_ti_0to5_224", tuple(range(6)), True),
                               ("cpvt_s_gap_224", tuple(range(6)), False)):
    model = jaxvit.create_model(name)
    params = jax.eval_shape(lambda: jaxvit.init_variables(model))["params"]
    assert "pos_embed" not in params and ("cls_token" in params.get("tokens", {})) == prefix
    with_peg = tuple(i for i in range(model.depth) if "pos_block" in params["encoder"][f"blocks_{i}"])
    assert with_peg == blocks
    kernel = params["encoder"]["blocks_0"]["pos_block"]["proj"]["kernel"]
    assert kernel.shape == (3, 3, 1, model.embed_dim)  # depthwise 3x3 (torch [C, 1, 3, 3])


@pytest.mark.parametrize("name,deit", [("cpvt_ti_224", "deit_tiny_patch16_224"),
                                       ("cpvt_s_0to5_224", "deit_small_patch16_224"),
                                       ("cpvt_b_224", "deit_base_patch16_224")])
def test_params_are_deit_without_pos_embed_plus_the_pegs(name, deit):
  model = jaxvit.create_model(name)
  c = model.embed_dim
  expected = jaxvit.count_params(jaxvit.create_model(deit)) - 197 * c + len(model.peg_blocks) * 10 * c
  assert jaxvit.count_params(model) == expected
  assert round(expected / 1e6, 2) == PUBLISHED[name][0]


def test_the_same_weights_run_at_other_input_sizes():
  """PEG has no size-dependent parameter (the paper's point): weights made at 32 px run at 48 x 64."""
  model = jaxvit.create_model("cpvt_ti_224", **SMALL)
  params = random_params(model)
  bigger = model.clone(img_size=(48, 64))
  logits, out = jit_fast(lambda p, x: bigger.apply({"params": p}, x), params, jnp.ones((2, 48, 64, 3)))
  assert logits.shape == (2, 5) and out["block0"].shape == (2, 1 + 6 * 8, 16)
  with pytest.raises(ValueError, match="img_size"):
    model.apply({"params": params}, jnp.ones((1, 48, 48, 3)))


def test_zero_padding_tells_the_border_from_the_interior():
  """A constant patch grid through one PEG: the interior stays uniform, the border (zero padded) differs, and the
  class token passes through untouched."""
  model = jaxvit.create_model("cpvt_ti_224", img_size=48, patch_size=8, embed_dim=8, depth=1, num_heads=2)
  block = jaxvit.models.vit.Block(num_heads=2, grid=(6, 6), peg=True)
  x = jnp.concatenate([jnp.full((1, 1, 8), 3.0), jnp.ones((1, 36, 8))], axis=1)
  params = random_params(model)["encoder"]["blocks_0"]
  y, _ = block.apply({"params": params}, x, 0.0)
  without = block.clone(peg=False).apply({"params": {k: v for k, v in params.items() if k != "pos_block"}}, x, 0.0)[0]
  np.testing.assert_allclose(y[:, 0], without[:, 0], atol=1e-6)  # the class token
  grid = np.asarray(y[0, 1:] - without[0, 1:]).reshape(6, 6, 8)
  np.testing.assert_allclose(grid[1:-1, 1:-1], np.broadcast_to(grid[2:3, 2:3], (4, 4, 8)), atol=1e-5)
  assert np.abs(grid[0, 0] - grid[2, 2]).max() > 1e-3 and np.abs(grid[0, 2] - grid[2, 2]).max() > 1e-3


@pytest.mark.parametrize("overrides,field", [
    (dict(scan=True), "scan"),
    (dict(peg_blocks=(12,)), "peg_blocks"),
    (dict(peg_blocks=()), "peg_blocks"),
    (dict(peg_blocks=(0, 0)), "peg_blocks"),
    (dict(reduction=dict(kind="tome", r=4)), "reduction"),
    (dict(pos_embed="peg+peg"), "pos_embed"),
])
def test_config_errors(overrides, field):
  with pytest.raises(ValueError, match=field):
    jaxvit.create_model("cpvt_ti_224", **overrides)
  with pytest.raises(ValueError, match="peg_blocks=\\(3,\\)"):
    jaxvit.create_model("deit_tiny_patch16_224", peg_blocks=(3,))  # PEG positions without a PEG


def test_bfloat16():
  model = jaxvit.create_model("cpvt_ti_gap_224", dtype=jnp.bfloat16, peg_blocks=(0, 1), **SMALL)
  logits, _ = jit_fast(lambda p, x: model.apply({"params": p}, x), random_params(model), jnp.ones((1, 32, 32, 3)))
  assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


def _official_peg():
  """`PosCNN` (the PEG) from the Twins mirror's gvt.py, its class alone (the file imports timm's old paths)."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(TWINS):
    pytest.skip("no local mirror of Meituan-AutoML/Twins")
  source = subprocess.run(["git", "--git-dir", TWINS, "show", f"{TWINS_COMMIT}:gvt.py"], capture_output=True,
                          text=True, check=True).stdout
  node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "PosCNN")
  namespace = {"nn": torch.nn, "torch": torch}
  exec(compile(ast.Module([node], type_ignores=[]), "gvt.py", "exec"), namespace)
  return namespace["PosCNN"]


def reference_cpvt(peg_blocks, img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2, num_classes=5,
                   class_token=True):
  """timm's DeiT without position embedding and the official PEG after `peg_blocks`, the class token split off and
  put back (the paper's Algorithm 1 / PEG code); GAP as the authors' CPVTV2 (norm, then the mean)."""
  import timm
  import torch
  PosCNN = _official_peg()  # noqa: N806

  class Reference(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.vit = timm.models.vision_transformer.VisionTransformer(
          img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
          num_classes=num_classes, pos_embed="none", class_token=class_token,
          global_pool="token" if class_token else "avg", fc_norm=False)
      self.pegs = torch.nn.ModuleDict({str(i): PosCNN(embed_dim, embed_dim) for i in peg_blocks})
      self.grid = img_size // patch_size

    def forward(self, images):
      vit, n = self.vit, self.vit.num_prefix_tokens
      x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
      for i, block in enumerate(vit.blocks):
        x = block(x)
        if str(i) in self.pegs:
          x = torch.cat([x[:, :n], self.pegs[str(i)](x[:, n:], self.grid, self.grid)], dim=1)
      return vit.forward_head(vit.norm(x))

  reference = Reference().eval()
  torch.manual_seed(0)
  with torch.no_grad():
    for p in reference.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return reference


def reference_state_dict(reference):
  """The reference's weights under jaxvit's timm names: `pegs.{i}.proj.0` -> `blocks.{i}.pos_block.proj`."""
  state = {k[len("vit."):]: v.numpy() for k, v in reference.state_dict().items() if k.startswith("vit.")}
  for key, value in reference.state_dict().items():
    if key.startswith("pegs."):
      _, i, _, _, leaf = key.split(".")
      state[f"blocks.{i}.pos_block.proj.{leaf}"] = value.numpy()
  return state


@pytest.mark.parity
@pytest.mark.parametrize("name,peg_blocks", [("cpvt_ti_224", (0,)), ("cpvt_ti_gap_224", (0, 2))])
def test_logits_match_timm_vit_with_the_official_peg(name, peg_blocks):
  import torch
  class_token = "gap" not in name
  reference = reference_cpvt(peg_blocks, class_token=class_token)
  arch = dict(SMALL, peg_blocks=peg_blocks)
  model, variables = convert_state_dict(name, reference_state_dict(reference), **arch)
  images = np.random.RandomState(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  logits, _ = jit_fast(lambda v, x: model.apply(v, x), variables, images)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.parity_all
@pytest.mark.parametrize("name", ["cpvt_ti_224", "cpvt_ti_0to5_224", "cpvt_s_gap_224"])
def test_fvcore_on_the_reference_equals_the_registered_gmacs(name):
  """fvcore (timm's attention unfused, so its matmuls count) on the full-size torch reference."""
  import torch
  from fvcore.nn import FlopCountAnalysis
  model = jaxvit.create_model(name)
  reference = reference_cpvt(model.peg_blocks, img_size=224, patch_size=16, embed_dim=model.embed_dim, depth=12,
                             num_heads=model.num_heads, num_classes=1000, class_token=model.class_token)
  for block in reference.vit.blocks:
    block.attn.fused_attn = False
  assert sum(p.numel() for p in reference.parameters()) == jaxvit.count_params(model)
  flops = FlopCountAnalysis(reference, torch.zeros(1, 3, 224, 224))
  flops.unsupported_ops_warnings(False)
  flops.uncalled_modules_warnings(False)
  assert round(flops.total() / 1e9, 2) == PUBLISHED[name][1]
