"""AdaViT: decisions, logits, usage loss and gradients against the official MengLcool/AdaViT model (its
`ada_t2t_vit.py` / `ada_transformer_block.py` / `losses.py`, from the local mirror; skipped without it), all kept =
DeiT, static masks, executed MACs against the official FLOPs dictionary, configs."""

import contextlib
import functools
import io
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
from jaxvit.dynamic import adavit
from jaxvit.train.step import classification_loss
from jaxvit.utils import init_variables

OFFICIAL_REPO = "/work/.mirror/MengLcool+AdaViT/repo"
# a 3-block DeiT on 32 px, 8 px patches (17 tokens): block 0 selects tokens only, blocks 1-2 heads and branches too
SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2, num_classes=10)
# every AdaLoss term on: targets, diversity, entropy and minimal usage
LOSS = dict(head_diverse=0.1, layer_diverse=0.1, head_entropy=0.1, layer_entropy=0.1, head_minimal=0.6,
            head_minimal_weight=1.0, layer_minimal=0.6, layer_minimal_weight=1.0, token_minimal=0.6,
            token_minimal_weight=1.0)


def _source(path):
  return subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"HEAD:{path}"], capture_output=True, text=True,
                        check=True).stdout


def _module(name, source, **names):
  module = types.ModuleType(name)
  module.__dict__.update(names)
  exec(compile(source, f"{name}.py", "exec"), module.__dict__)
  return module


@pytest.fixture(scope="module")
def official():
  """`(torch, ada_t2t_vit, ada_transformer_block, losses)`: the official modules, the T2T parts unused (stubs)."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of MengLcool/AdaViT")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    blocks = _module("transformer_block", _source("models/transformer_block.py"))
    ada = _module("ada_transformer_block", _source("models/ada_transformer_block.py"))
    source = _source("models/ada_t2t_vit.py")
    for old in ("from .token_transformer import Token_transformer\n", "from .token_performer import Token_performer\n",
                "from .transformer_block import Block, get_sinusoid_encoding\n",
                "from .ada_transformer_block import StepAdaBlock, get_random_policy\n", "@register_model\n"):
      assert old in source, old
      source = source.replace(old, "")
    model = _module("ada_t2t_vit", source, Block=blocks.Block, get_sinusoid_encoding=blocks.get_sinusoid_encoding,
                    StepAdaBlock=ada.StepAdaBlock, get_random_policy=ada.get_random_policy)
    source = _source("models/losses.py")
    source = source.replace("from numpy.lib.arraysetops import isin\n", "").replace(
        "from timm.data.transforms_factory import transforms_imagenet_train\n", "")
    losses = _module("losses", source)
  return torch, model, ada, losses


def _official_model(torch, module):
  """The official Ada-DeiT of `SMALL` (head, block and token selection, tokens masking the MLP too), weights moved
  by 0.05 N(0, 1) and the decision heads drawn wide (weights 0.5 N(0, 1), biases N(0, 1)) so decisions mix."""
  torch.manual_seed(0)
  with contextlib.redirect_stdout(io.StringIO()):
    ref = module.AdaStepT2T_ViT(use_t2t=False, mlp_ratio=4, qkv_bias=True, ada_head=True, ada_layer=True,
                                ada_token=True, ada_token_with_mlp=True,
                                norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), **SMALL)
  with torch.no_grad():
    for name, p in ref.named_parameters():
      p.copy_(torch.randn_like(p) * (0.5 if name.endswith("weight") else 1.0) if "select" in name else
              p + 0.05 * torch.randn_like(p))
  return ref


def _to_jax(state_dict):
  """Official tensors -> jaxvit params: `query` / `key` / `value` joined into timm's `qkv` (the official
  `utils.convert_qkv` splits DeiT's), the decision heads' `mlp_head` -> `encoder/blocks_i/<kind>`."""
  from jaxvit.convert import convert_state_dict
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  timm = {k: v for k, v in sd.items() if "select" not in k and not any(f".attn.{n}." in k for n in
                                                                         ("query", "key", "value"))}
  for i in range(SMALL["depth"]):
    for leaf in ("weight", "bias"):
      timm[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate([sd[f"blocks.{i}.attn.{n}.{leaf}"]
                                                            for n in ("query", "key", "value")])
  _, variables = convert_state_dict("deit_tiny_patch16_224", timm, **SMALL)
  params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  for key, value in sd.items():
    if "select" in key:
      kind = next(n for n in ("token_select", "head_select", "layer_select") if n in key)
      leaf = "kernel" if key.endswith("weight") else "bias"
      params[f"encoder/blocks_{key.split('.')[1]}/{kind}/{leaf}"] = value.T if leaf == "kernel" else value
  return {"params": flax.traverse_util.unflatten_dict(params, sep="/")}


def _images(n=3):
  return np.random.RandomState(0).standard_normal((n, 32, 32, 3)).astype(np.float32)


def test_inference_decisions_and_logits_match_official(official):
  torch, module, _, _ = official
  ref = _official_model(torch, module).eval()
  images = _images()
  with torch.no_grad():
    logits_ref, heads, layers, tokens, _ = ref(torch.from_numpy(images).permute(0, 3, 1, 2))
  model = jaxvit.create_model("adavit_deit_tiny_patch16_224", **SMALL)
  logits, out = jax.jit(model.apply)(_to_jax(ref.state_dict()), images)
  np.testing.assert_allclose(np.asarray(logits), logits_ref.numpy(), atol=1e-5)
  for key, expected in (("head_select", heads), ("layer_select", layers), ("token_select", tokens)):
    np.testing.assert_array_equal(np.asarray(out[key]), expected.numpy(), err_msg=key)
    assert 0 < expected.numpy().mean() < 1, key  # decisions mixed: every mask is exercised
  assert out["token_select"].shape == (3, 3, 17) and out["head_select"].shape == (3, 2, 2)


def test_training_loss_and_gradients_match_official(official, monkeypatch):
  """Training mode with the Gumbel noise at 0 on both sides (the official draws g = -log(Exp(1)); `exponential_`
  fills 1): logits, decisions, `AdaLoss` with every term, and its gradients equal the official ones."""
  torch, module, _, losses = official
  ref = _official_model(torch, module).train()
  images, labels = _images(), np.array([1, 4, 7])
  monkeypatch.setattr(torch.Tensor, "exponential_", lambda self, *a, **k: self.fill_(1.0))
  outputs = ref(torch.from_numpy(images).permute(0, 3, 1, 2))
  criterion = losses.AdaLoss(torch.nn.CrossEntropyLoss(), head_diverse_ratio=0.1, layer_diverse_ratio=0.1,
                             head_entropy_weight=0.1, layer_entropy_weight=0.1, head_minimal_weight=1.0,
                             head_minimal=0.6, layer_minimal_weight=1.0, layer_minimal=0.6, token_minimal=0.6,
                             token_minimal_weight=1.0)
  loss_ref, parts_ref = criterion(outputs, torch.from_numpy(labels))
  loss_ref.backward()

  monkeypatch.setattr(adavit, "logistic_noise", lambda rng, shape: jnp.zeros(shape, jnp.float32))
  model = jaxvit.create_model("adavit_deit_tiny_patch16_224", **SMALL)
  loss_fn = adavit.usage_loss(classification_loss(), model, **LOSS)

  def f(params):
    logits, out = model.apply({"params": params}, images, train=True, rngs={"gumbel": jax.random.key(0)})
    loss, metrics = loss_fn(logits, out, {"label": labels})
    return loss, (logits, out, metrics)
  (loss, (logits, out, metrics)), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(
      _to_jax(ref.state_dict())["params"])
  np.testing.assert_allclose(np.asarray(logits), outputs[0].detach().numpy(), atol=1e-5)
  for key, index in (("head_select", 1), ("layer_select", 2), ("token_select", 3)):
    np.testing.assert_array_equal(np.asarray(out[key]), outputs[index].detach().numpy(), err_msg=key)
  for key in ("head_loss", "layer_loss", "token_loss"):
    np.testing.assert_allclose(float(metrics[key]), parts_ref[key].item(), rtol=1e-5, err_msg=key)
  np.testing.assert_allclose(float(loss), loss_ref.item(), rtol=1e-5)
  expected = _to_jax({k: p.grad if p.requires_grad else torch.zeros_like(p) for k, p in ref.named_parameters()})
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  for path, value in flax.traverse_util.flatten_dict(expected["params"], sep="/").items():
    if path == "pos_embed":  # frozen in the official model
      continue
    np.testing.assert_allclose(np.asarray(flat[path]), value, atol=1e-5 * max(1.0, np.abs(value).max()),
                               err_msg=path)
  assert np.abs(flat["encoder/blocks_1/head_select/kernel"]).max() > 0  # the decisions are trained


def test_gumbel_sigmoid_matches_official(official):
  torch, _, ada, _ = official
  logits = np.random.RandomState(2).standard_normal((4, 6)).astype(np.float32) * 3
  torch.manual_seed(3)
  e1 = torch.empty(4, 6).exponential_()
  e2 = torch.empty(4, 6).exponential_()
  torch.manual_seed(3)
  t = torch.from_numpy(logits).requires_grad_()
  expected = ada._gumbel_sigmoid(t, tau=5, hard=True, threshold=0.6)
  (expected * torch.arange(24.0).view(4, 6)).sum().backward()
  noise = jnp.asarray((-e1.log() + e2.log()).numpy())
  value, grad = jax.value_and_grad(lambda x: (adavit.gumbel_sigmoid(x, noise, 5.0, 0.6) * jnp.arange(24.0).reshape(
      4, 6)).sum())(jnp.asarray(logits))
  np.testing.assert_array_equal(np.asarray(adavit.gumbel_sigmoid(logits, noise, 5.0, 0.6)), expected.detach().numpy())
  np.testing.assert_allclose(np.asarray(grad), t.grad.numpy(), rtol=1e-5, atol=1e-7)
  with torch.no_grad():
    inference = ada._gumbel_sigmoid(torch.from_numpy(logits), tau=5, hard=True, training=False)
  np.testing.assert_array_equal(np.asarray(adavit.gumbel_sigmoid(logits)), inference.numpy())


def _official_block_macs(h, t, a, m, n=197, dim=384, heads=6, hidden=1536):
  """The official FLOPs dictionary's convention (`block_flops_dict.py`, `forward_count_flops`): no decision heads,
  both LayerNorms on every token, proj counted w x w, a block with no head costs nothing; its token count is
  int(n x ratio) in float32, the ratio t / n (one less for 11 values of t), and the t = 0 row is unfilled."""
  w, t = h * dim // heads, int(np.float32(n) * np.float32(t / n))
  return 0 if h == 0 or t == 0 else 5 * n * dim + a * (5 * n * dim + 3 * t * dim * w + 2 * t * t * w + t * w * w) + \
      m * (t * w * hidden + t * hidden * dim)


def test_executed_macs_against_the_official_flops_dictionary(official):
  """`adavit_ckpt/deit-s-h-l-tmlp_flops_dict.pth` [heads, tokens, attention, mlp] (GFLOPs; the paper's 2.25 G for
  Ada-DeiT-S adds 0.06 for the rest) follows `_official_block_macs` at every entry; jaxvit's executed count differs
  from it by the decision heads, proj's t w (C - w), and the LayerNorms (the first on every token when either
  branch runs, the token head reads it; the second on the kept tokens when the MLP runs)."""
  torch = official[0]
  data = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:adavit_ckpt/deit-s-h-l-tmlp_flops_dict.pth"],
                        capture_output=True, check=True).stdout
  table = torch.load(io.BytesIO(data)).double().numpy() * 1e9
  h, t, a, m = np.meshgrid(np.arange(7), np.arange(198), np.arange(2), np.arange(2), indexing="ij")
  official_macs = np.vectorize(_official_block_macs)(h, t, a, m)
  np.testing.assert_allclose(table, official_macs, rtol=1e-6, atol=64)  # float32 GFLOPs
  kw = dict(select_heads=True, select_layers=True, select_tokens=True)
  for h, t, a, m in ((6, 197, 1, 1), (3, 99, 1, 1), (2, 150, 1, 0), (5, 40, 0, 1), (1, 196, 1, 1)):
    w = h * 64
    ours = adavit.block_macs(197, 384, 6, 1536, heads=h, tokens=t, attention=a, mlp=m, **kw)
    heads = 6 * 384 + 2 * 384 + max(a, m) * 196 * 384  # head, branch and token decision heads
    norms = (max(a, m) - 1 - a) * 5 * 197 * 384 + m * 5 * t * 384  # LayerNorm 1 if any branch, 2 on kept tokens
    assert ours == _official_block_macs(h, t, a, m) + heads + norms + a * t * w * (384 - w), (h, t, a, m)


@pytest.fixture(scope="module")
def tiny():
  """The AdaViT of `SMALL`, random weights (0.05 N(0, 1); LayerNorm scales 1 + that; decision heads 0.5 N(0, 1),
  biases N(0, 1)), two images."""
  model = jaxvit.create_model("adavit_deit_tiny_patch16_224", **SMALL)
  shapes = flax.traverse_util.flatten_dict(jax.eval_shape(lambda: init_variables(model))["params"], sep="/")
  rng = np.random.RandomState(1)
  params = {k: ((k.endswith("scale") + (0.5 if k.endswith("kernel") else 1.0) * rng.standard_normal(v.shape))
                if "select" in k else k.endswith("scale") + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in sorted(shapes.items())}
  return model, {"params": flax.traverse_util.unflatten_dict(params, sep="/")}, _images(2)


def test_everything_kept_is_deit(tiny):
  """Decision heads that always keep (bias 100): DeiT's logits, and DeiT's MACs plus the decision heads'."""
  model, variables, images = tiny
  params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  params.update({k: np.full_like(v, 100.0 if k.endswith("bias") else 0.0) for k, v in params.items() if "select" in k})
  variables = {"params": flax.traverse_util.unflatten_dict(params, sep="/")}
  deit = jaxvit.create_model("deit_tiny_patch16_224", **SMALL)
  logits, out = jax.jit(model.apply)(variables, images)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(jax.jit(deit.apply)(variables, images)[0]), atol=1e-6)
  train_logits, train_out = jax.jit(lambda v, x: model.apply(v, x, train=True, rngs={"gumbel": jax.random.key(0)}))(
      variables, images)
  np.testing.assert_allclose(np.asarray(train_logits), np.asarray(logits), atol=1e-6)
  assert all(np.all(np.asarray(o[k]) == 1) for o in (out, train_out) for k in ("head_select", "token_select"))
  selectors = 3 * (16 * 64) + 2 * (2 * 64 + 2 * 64)  # token heads on 16 patches x 3 blocks; head + branch heads x 2
  np.testing.assert_array_equal(np.asarray(out["macs"]), count_macs(deit, variables, images[:1])["total"] + selectors)
  assert count_macs(model, variables, images[:1])["total"] == out["macs"][0]  # the static count: all executed


def test_masks_are_static_and_macs_follow_decisions(tiny):
  model, variables, images = tiny
  apply = jax.jit(lambda v, x: model.apply(v, x))
  _, out = apply(variables, images)
  _, out2 = apply(variables, images * 2.0)
  assert apply._cache_size() == 1 and out["token_select"].shape == out2["token_select"].shape == (2, 3, 17)
  assert not np.array_equal(np.asarray(out["token_select"]), np.asarray(out2["token_select"]))
  from jaxvit.models.avit import fixed_macs
  expected = fixed_macs(model, 17)
  for i in range(3):  # block 0 selects tokens only
    select = dict(select_tokens=True, select_heads=i > 0, select_layers=i > 0)
    decisions = dict(tokens=out["token_select"][:, i].sum(-1))
    if i:
      decisions.update(heads=out["head_select"][:, i - 1].sum(-1), attention=out["layer_select"][:, i - 1, 0],
                       mlp=out["layer_select"][:, i - 1, 1])
    expected = expected + adavit.block_macs(17, 64, 2, 256, **decisions, **select)
  np.testing.assert_allclose(np.asarray(out["macs"]), np.asarray(expected), rtol=1e-6)
  full = count_macs(model, variables, images[:1])["total"]
  assert np.all(np.asarray(out["macs"]) < full)


def test_usage_loss_trains_the_decisions(tiny):
  """With Gumbel noise: finite loss above the classification loss, gradients reaching every decision head."""
  model, variables, images = tiny
  batch = {"label": np.array([3, 5])}
  loss_fn = adavit.usage_loss(classification_loss(), model)

  def f(params):
    logits, out = model.apply({"params": params}, images, train=True, rngs={"gumbel": jax.random.key(1)})
    loss, metrics = loss_fn(logits, out, batch)
    return loss, (metrics, classification_loss()(logits, out, batch)[0])
  (loss, (metrics, base)), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(variables["params"])
  assert np.isfinite(float(loss)) and float(loss) > float(base)
  assert {"head_loss", "layer_loss", "token_loss", "head_usage", "block_usage", "token_usage"} <= set(metrics)
  for name in ("blocks_0/token_select", "blocks_1/head_select", "blocks_2/layer_select"):
    assert np.abs(flax.traverse_util.flatten_dict(grads, sep="/")[f"encoder/{name}/kernel"]).max() > 0, name
  with pytest.raises(ValueError, match=r"unknown \['head_ratio'\]; accepted: head_weight"):
    adavit.usage_loss(classification_loss(), model, head_ratio=2.0)


def test_bfloat16_runs(tiny):
  model, variables, images = tiny
  logits, out = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(variables, images)
  assert logits.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(logits, np.float32)))
  assert out["head_select"].shape == (2, 2, 2)


def test_counts_equal_official():
  """22,089,164 (Ada-DeiT-S) and 5,730,347 (Ada-DeiT-T) parameters, as the official model's sum of numel."""
  for name, count in (("adavit_deit_small_patch16_224", 22_089_164), ("adavit_deit_tiny_patch16_224", 5_730_347)):
    assert jaxvit.utils.count_params(jaxvit.create_model(name)) == count
  assert jaxvit.create_model("adavit_deit_small_patch16_224").reduction_params[:3] == (
      "encoder/blocks_0/token_select", "encoder/blocks_0/head_select", "encoder/blocks_0/layer_select")


@pytest.mark.parametrize("field,value,match", [
    ("keep_layers", 12, "keep_layers=12; accepted: 0..11"),
    ("dist_token", True, "dist_token=True; accepted: False"),
    ("reduction", dict(kind="tome", r=2), "reduction=.*accepted: None"),
    ("global_pool", "avg", "global_pool='avg'; accepted: 'token'"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("adavit_deit_small_patch16_224", **{field: value})
  with pytest.raises(ValueError, match="ada_head=False; accepted: True, or ada_layer / ada_token"):
    jaxvit.create_model("adavit_deit_small_patch16_224", ada_head=False, ada_layer=False, ada_token=False)
