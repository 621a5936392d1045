"""A-ViT: halting, ponder and prior against the official NVlabs/A-ViT model (its `act_vision_transformer.py` run on
CPU, from the local mirror; skipped without it), no halting = DeiT, static masks, expected MACs, losses, configs."""

import argparse
import ast
import os
import subprocess
import types
import warnings

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.dynamic import avit
from jaxvit.train.step import classification_loss
from jaxvit.utils import init_variables

OFFICIAL_REPO = "/work/.mirror/NVlabs+A-ViT/repo"
# a 4-block DeiT on 32 px, 8 px patches (17 tokens): small enough to compare gradients with the official model
SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=2, num_classes=10)


def _source(path):
  return subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"HEAD:{path}"], capture_output=True, text=True,
                        check=True).stdout


@pytest.fixture(scope="module")
def official():
  """`(torch, module)`: the official `act_vision_transformer.py` with timm 1.0's layers, `.cuda()` dropped, and
  `utils.get_distribution_target` beside it."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  pytest.importorskip("scipy")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of NVlabs/A-ViT")
  source = _source("timm/models/act_vision_transformer.py")
  for old, new in (("from .helpers import build_model_with_cfg, named_apply, adapt_input_conv",
                    "from timm.models import named_apply"),
                   ("from .layers import PatchEmbed, Mlp, ACT_Mlp, DropPath, trunc_normal_, lecun_normal_",
                    "from timm.layers import PatchEmbed, Mlp, DropPath, trunc_normal_, lecun_normal_"),
                   ("from .registry import register_model", "register_model = lambda f: f"),
                   ("from utils import get_distribution_target\n", ""), (".cuda()", "")):
    assert old in source, old
    source = source.replace(old, new)
  module = types.ModuleType("act_official")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    utils = ast.parse(_source("utils.py"))
    target = [n for n in utils.body if isinstance(n, ast.FunctionDef) and n.name == "get_distribution_target"]
    exec(compile(ast.Module(target, []), "utils.py", "exec"), module.__dict__)
    exec(compile(source, "act_vision_transformer.py", "exec"), module.__dict__)
  return torch, module


def _official_model(torch, module, gate_center, distr_prior_alpha=0.1):
  args = argparse.Namespace(act_mode=4, gate_scale=10.0, gate_center=gate_center,
                            distr_prior_alpha=distr_prior_alpha)
  torch.manual_seed(0)
  with open(os.devnull, "w") as null, __import__("contextlib").redirect_stdout(null):
    ref = module.VisionTransformer(args=args, **{k: v for k, v in SMALL.items()})
    ref.distr_target = torch.tensor(module.get_distribution_target(length=4, target_depth=2), dtype=torch.float32)
  with torch.no_grad():  # move every weight so that tokens halt at different blocks
    for p in ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return ref


def _to_jax(state_dict, **fields):
  from jaxvit.convert import convert_state_dict
  _, variables = convert_state_dict("deit_tiny_patch16_224", state_dict, **SMALL)
  return jaxvit.create_model("avit_tiny_patch16_224", **SMALL, **fields), variables


def test_halting_ponder_prior_and_gradients_match_official(official):
  """Train mode, gate 10 / 2: logits, rho, token depths, per-block halting means, and the gradients of CE + ponder +
  prior (weights 0.1 each, so that both terms show) equal the official model's and `engine_act.py`'s."""
  torch, module = official
  ref = _official_model(torch, module, gate_center=2.0).train()
  images = np.random.RandomState(0).standard_normal((3, 32, 32, 3)).astype(np.float32)
  labels = np.array([1, 4, 7])
  logits_ref = ref(torch.from_numpy(images).permute(0, 3, 1, 2))
  halting_ref = torch.stack(ref.halting_score_layer)  # engine_act.py, torch.mean(h_lst[1][1:]) per block
  prior = halting_ref / halting_ref.sum()
  prior = 0.1 * ref.kl_loss(prior.clamp(0.01, 0.99).log(), ref.distr_target)
  loss_ref = torch.nn.functional.cross_entropy(logits_ref, torch.from_numpy(labels)) + \
      0.1 * torch.mean(ref.rho_token) + prior
  loss_ref.backward()

  model, variables = _to_jax(ref.state_dict(), gate_center=2.0)
  target = avit.distribution_target(4, 2)
  np.testing.assert_allclose(target, ref.distr_target.numpy(), rtol=1e-6)

  def loss_fn(params):
    logits, out = model.apply({"params": params}, images, train=True)
    ce, _ = classification_loss()(logits, out, {"label": labels})
    return ce + 0.1 * avit.ponder_loss(out["ponder"]) + 0.1 * avit.distr_prior_loss(out["halting_mean"][1:],
                                                                                      target), (logits, out)
  (loss, (logits, out)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
  np.testing.assert_allclose(np.asarray(logits), logits_ref.detach().numpy(), atol=2e-5)
  np.testing.assert_allclose(np.asarray(out["ponder"]), ref.rho_token.detach().numpy(), atol=2e-5)
  np.testing.assert_array_equal(np.asarray(out["token_depth"]), ref.counter_token.numpy())
  np.testing.assert_allclose(np.asarray(out["halting_mean"][1:].mean(0)), halting_ref.detach().numpy(), atol=1e-6)
  depth = np.asarray(out["token_depth"])
  assert depth.min() == 1 and depth.max() == 4 and len(np.unique(depth)) == 4  # halting at every block
  assert prior.item() > 0  # the official adds the prior only when positive
  np.testing.assert_allclose(float(loss), loss_ref.item(), rtol=1e-5)
  _, expected = _to_jax({k: p.grad.numpy() for k, p in ref.named_parameters()})
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  for path, value in flax.traverse_util.flatten_dict(expected["params"], sep="/").items():
    np.testing.assert_allclose(np.asarray(flat[path]), value, atol=2e-5 * max(1.0, np.abs(value).max()),
                               err_msg=path)


def test_distribution_target_matches_official(official):
  _, module = official
  np.testing.assert_allclose(avit.distribution_target(12, 8), module.get_distribution_target(), rtol=1e-12)
  np.testing.assert_allclose(avit.distribution_target(6, 3), module.get_distribution_target(length=6,
                                                                                           target_depth=3))


@pytest.fixture(scope="module")
def tiny():
  """The A-ViT of `SMALL` (gate 10 / 0), random weights (0.05 N(0, 1); LayerNorm scales 1 + that), two images."""
  model = jaxvit.create_model("avit_tiny_patch16_224", **SMALL, gate_center=0.0)
  shapes = flax.traverse_util.flatten_dict(jax.eval_shape(lambda: init_variables(model))["params"], sep="/")
  rng = np.random.RandomState(1)
  params = {k: (k.endswith("scale") + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in sorted(shapes.items())}
  images = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
  return model, {"params": flax.traverse_util.unflatten_dict(params, sep="/")}, images


def test_without_halting_it_is_deit(tiny):
  """A gate that never fires: every token runs every block, the logits are DeiT's and the MACs its count."""
  model, variables, images = tiny
  deit = jaxvit.create_model("deit_tiny_patch16_224", **SMALL)
  logits, out = jax.jit(model.clone(gate_center=1e4).apply)(variables, images)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(jax.jit(deit.apply)(variables, images)[0]), atol=1e-6)
  assert np.all(np.asarray(out["token_depth"]) == 4) and np.allclose(out["ponder"], 5.0)  # 4 blocks + remainder 1
  np.testing.assert_array_equal(np.asarray(out["macs"]), count_macs(deit, variables, images[:1])["total"])


@pytest.fixture(scope="module")
def tiny_apply(tiny):
  return jax.jit(tiny[0].apply)


def test_masks_are_static_and_macs_follow_token_depths(tiny, tiny_apply):
  """One compilation for images that halt differently; `macs` = fixed parts + each block on its running tokens."""
  model, variables, images = tiny
  apply = tiny_apply
  _, out = apply(variables, images)
  _, out2 = apply(variables, images[::-1] * 3.0)
  assert apply._cache_size() == 1 and out["ponder"].shape == out2["ponder"].shape == (2, 17)
  depth = np.asarray(out["token_depth"])
  assert not np.array_equal(depth, np.asarray(out2["token_depth"])[::-1])
  running = [(depth > i).sum(-1) for i in range(4)]  # tokens block i runs on
  full = count_macs(jaxvit.create_model("deit_tiny_patch16_224", **SMALL), variables, images[:1])["total"]
  expected = full - 4 * avit.block_macs(17, 64, 256) + sum(avit.block_macs(n, 64, 256) for n in running)
  np.testing.assert_allclose(np.asarray(out["macs"]), expected, rtol=1e-7)
  assert np.all(np.asarray(out["macs"]) < full)


def test_class_token_can_run_every_block(tiny, tiny_apply):
  model, variables, images = tiny
  _, out = tiny_apply(variables, images)
  assert np.any(np.asarray(out["token_depth"])[:, 0] < 4)  # the official code halts it like any token
  _, out = jax.jit(model.clone(halt_class_token=False).apply)(variables, images)
  assert np.all(np.asarray(out["token_depth"])[:, 0] == 4) and np.any(np.asarray(out["token_depth"])[:, 1:] < 4)


def test_act_loss_trains_the_halting(tiny):
  """The trainer's loss (`config.dynamic_loss = dict(kind="avit")`): finite, above the classification loss, and
  the ponder term's gradient reaches the blocks (through the halting scores), not the head."""
  model, variables, images = tiny
  batch = {"label": np.array([3, 5])}
  base = classification_loss()
  only_ponder = avit.act_loss(lambda *a: (0.0, {}), model, ponder_weight=1.0, distr_prior_weight=0.0)

  def ponder(params):
    logits, out = model.apply({"params": params}, images, train=True)
    return only_ponder(logits, out, batch)[0], (logits, out)
  (_, (logits, out)), g = jax.jit(jax.value_and_grad(ponder, has_aux=True))(variables["params"])
  loss, metrics = avit.act_loss(base, model)(logits, out, batch)
  assert np.isfinite(float(loss)) and float(loss) > float(base(logits, out, batch)[0])
  assert {"ponder_loss", "distr_prior_loss", "token_depth"} <= set(metrics)
  assert np.abs(np.asarray(g["encoder"]["blocks_0"]["mlp"]["fc2"]["kernel"])).max() > 0
  assert not np.any(np.asarray(g["head"]["kernel"]))
  with pytest.raises(ValueError, match="target_depth=9; accepted: an int in 1..depth=4"):
    avit.act_loss(base, model, target_depth=9)


def test_bfloat16_runs(tiny):
  model, variables, images = tiny
  logits, out = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(variables, images)
  assert logits.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(logits, np.float32)))
  assert out["token_depth"].shape == (2, 17)


def test_counts_are_deit_s():
  """A-ViT adds no parameters: DeiT-S's 22.05 M; its static count is DeiT-S's 4.61 GMACs (the paper's 3.6 is the
  expected cost of its trained halting, `out["macs"]`)."""
  model = jaxvit.create_model("avit_small_patch16_224")
  deit = jaxvit.create_model("deit_small_patch16_224")
  shapes = lambda m: jax.tree.map(lambda x: x.shape, jax.eval_shape(lambda: init_variables(m)))  # noqa: E731
  assert shapes(model) == shapes(deit) and model.gate_center == 75.0
  assert jaxvit.create_model("avit_tiny_patch16_224").gate_center == 30.0


@pytest.mark.parametrize("field,value,match", [
    ("reduction", dict(kind="tome", r=2), "reduction=.*accepted: None"),
    ("dist_token", True, "dist_token=True; accepted: False"),
    ("scan", True, "scan=True; accepted: False"),
    ("global_pool", "avg", "global_pool='avg'; accepted: 'token'"),
    ("pos_embed", "rope_axial", "pos_embed='rope_axial'; accepted"),
    ("gate_scale", 0.0, "gate_scale=0.0; accepted: > 0"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("avit_tiny_patch16_224", **{field: value})

