"""IdleViT (`reduction=dict(kind="idlevit")`): logits and token cut loss against the official `vit.py` / `losses.py`
(from the local mirror of Ackesnal/IdleViT; skipped without it), token counts and FLOPs of DeiT-S, the idle tokens
passing unchanged, keep_rate 1 = the plain model, training under jit, the trainer's loss and bad configs."""

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.convert import convert_state_dict
from jaxvit.dynamic import idlevit
from jaxvit.train import step as step_lib
from dynamic_oracle import check_bfloat16, random_variables

OFFICIAL_REPO = "/work/.mirror/Ackesnal+IdleViT/repo"
IDLE_LAYERS, RATE = list(range(4, 12)), 0.7


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  """The official `vit` and `losses` modules, extracted from the mirror (they import `utils` by that name)."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of Ackesnal/IdleViT")
  out = tmp_path_factory.mktemp("idlevit_official")
  archive = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "archive", "HEAD", "vit.py", "losses.py", "utils.py"],
                           capture_output=True, check=True).stdout
  tarfile.open(fileobj=io.BytesIO(archive)).extractall(out, filter="data")
  saved = {name: sys.modules.pop(name) for name in ("utils", "vit", "losses") if name in sys.modules}
  sys.path.insert(0, str(out))
  try:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
      warnings.simplefilter("ignore")
      import losses as official_losses
      import vit as official_vit
  finally:
    sys.path.remove(str(out))
    for name in ("utils", "vit", "losses"):
      sys.modules.pop(name, None)
    sys.modules.update(saved)
  official_vit.checkpoint.checkpoint = lambda fn, *args: fn(*args)  # plain calls: same values, no reentrant warning
  return torch, official_vit, official_losses


def _reference(official):
  torch, official_vit, _ = official
  keep_ratios = [RATE ** (i + 1) for i in range(3) for _ in range(3)]  # main.py's DeiT schedule
  torch.manual_seed(0)
  with contextlib.redirect_stdout(io.StringIO()):
    ref = official_vit.IdleVisionTransformer(img_size=64, patch_size=16, num_classes=10, embed_dim=64, depth=12,
                                             num_heads=2, idle_layers=IDLE_LAYERS, keep_ratios=keep_ratios)
  with torch.no_grad():
    for t in ref.state_dict().values():
      t.add_(0.3 * torch.randn_like(t))
  state = {k: v.numpy() for k, v in ref.state_dict().items()}
  model, variables = convert_state_dict("deit_tiny_patch16_224", state, img_size=64, embed_dim=64, num_heads=2,
                                        num_classes=10, reduction=dict(kind="idlevit", keep_rate=RATE))
  images = np.random.RandomState(0).standard_normal((3, 64, 64, 3)).astype(np.float32)
  return ref, keep_ratios, model, variables, images


def test_logits_and_token_cut_loss_match_official(official):
  """Inference (the official `test=True` gather-scatter) and training (its key masking) on 16 patches: 11, 7, 5
  selected at blocks 4-6, 7-9, 10-11; the token cut loss of each idle block as `IdleViTTotalLoss` (both terms)."""
  torch, _, official_losses = official
  ref, keep_ratios, model, variables, images = _reference(official)
  batch = torch.from_numpy(images.transpose(0, 3, 1, 2))
  labels = torch.tensor([1, 4, 7])
  criterion = official_losses.IdleViTTotalLoss(torch.nn.CrossEntropyLoss(), None, keep_ratios, IDLE_LAYERS,
                                               cutloss_type="both", cut_weight=20.0, distill_loss=False)
  with torch.no_grad():
    expected = ref.eval()(batch.clone()).numpy()
    ref.train()
    train_logits, attns, masks, feats = ref(batch.clone())
    ce = float(torch.nn.functional.cross_entropy(train_logits, labels))
    # one block at a time: the loss divides by the 8 idle blocks
    cuts = [(float(criterion(None, (train_logits, None, [a], [m], feats), labels)) - ce) * 8 / 20
            for a, m in zip(attns, masks)]
    official_total = float(criterion(None, (train_logits, None, list(attns), list(masks), feats), labels))
  # the official loop deletes list entries while enumerating them: it adds blocks 4, 6, 8 and 10 only
  np.testing.assert_allclose(official_total, ce + 20 * sum(cuts[::2]) / 8, rtol=1e-5)

  (logits, out), trained = jax.jit(  # one program: inference and training forwards
      lambda v, x: (model.apply(v, x), model.apply(v, x, train=True)))(variables, images)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
  assert [out[f"idle_kept{i}"].shape[1] for i in IDLE_LAYERS] == [11] * 3 + [7] * 3 + [5] * 2
  assert all(out[f"block{i}"].shape[1] == 17 for i in range(12))  # no token is dropped

  logits, out = trained
  np.testing.assert_allclose(logits, train_logits.numpy(), atol=1e-4, rtol=0)
  for j, i in enumerate(IDLE_LAYERS):
    np.testing.assert_array_equal(np.asarray(out[f"idle_mask{i}"]), masks[j][..., 0].numpy())
    np.testing.assert_allclose(float(idlevit.token_cut_loss(out[f"idle_attn{i}"], out[f"idle_mask{i}"])), cuts[j],
                               rtol=1e-4, atol=1e-7)
  loss, metrics = idlevit.cut_loss(step_lib.classification_loss(), model)(logits, out, {"label": jnp.asarray(labels)})
  np.testing.assert_allclose(float(loss), ce + 20 * sum(cuts) / 8, rtol=1e-5)  # every idle block
  np.testing.assert_allclose(float(metrics["cut_loss"]), sum(cuts) / 8, rtol=1e-4)


def test_idle_tokens_pass_unchanged_and_return():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=64, depth=3, num_classes=5, embed_dim=32, num_heads=2,
                              reduction=dict(kind="idlevit", keep_rate=0.5, locations=(1, 2)))
  variables = random_variables(model)
  images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  _, out = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  for i, k in ((1, 8), (2, 4)):  # 16 patches; stages of one block: 0.5, then 0.25
    kept = np.asarray(out[f"idle_kept{i}"])  # [B, k] patch indices
    assert kept.shape == (2, k)
    idle = np.ones((2, 16), bool)
    np.put_along_axis(idle, kept, False, axis=1)
    before, after = np.asarray(out[f"block{i - 1}"])[:, 1:], np.asarray(out[f"block{i}"])[:, 1:]
    np.testing.assert_array_equal(after[idle], before[idle])
    assert np.abs(after[~idle] - before[~idle]).min() > 0
  # a patch idle at block 1 can be selected again at block 2 (first image)
  assert set(np.asarray(out["idle_kept2"])[0]) - set(np.asarray(out["idle_kept1"])[0])


def test_keep_rate_one_is_the_plain_model():
  plain = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, depth=2, embed_dim=32, num_heads=2)
  model = plain.clone(reduction=dict(kind="idlevit", keep_rate=1.0, locations=(0, 1)))
  variables = random_variables(plain)
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  logits = [jax.jit(lambda v, x, m=m: m.apply(v, x)[0])(variables, images) for m in (model, plain)]
  np.testing.assert_array_equal(*logits)


def test_deit_small_token_counts_and_gmacs():
  """Official DeiT-S / 0.7: blocks 4-11 run 137, 96, 67 patches and the class token."""
  model = jaxvit.create_model("deit_small_patch16_224", reduction=dict(kind="idlevit"))
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  _, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert [out[f"idle_kept{i}"].shape[1] for i in range(4, 12)] == [137] * 3 + [96] * 3 + [67] * 2
  assert round(count_macs(model, variables, images)["total"] / 1e9, 2) == 3.15
  assert jaxvit.count_params(model) == jaxvit.count_params(jaxvit.create_model("deit_small_patch16_224"))


def test_trains_under_jit_with_the_cut_loss():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, depth=2, num_classes=4, embed_dim=32,
                              num_heads=2, reduction=dict(kind="idlevit", keep_rate=0.5, locations=(1,)))
  variables = random_variables(model)
  loss_fn = idlevit.cut_loss(step_lib.classification_loss(), model, cut_weight=20.0)
  batch = {"label": jnp.array([0, 1, 2, 3])}
  images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))

  def loss(params, cut_weight):
    logits, out = model.apply({"params": params}, images, train=True)
    total, metrics = loss_fn(logits, out, batch)
    return total - (20.0 - cut_weight) * metrics["cut_loss"], metrics

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (value, metrics), grads = grad(variables["params"], 20.0)
  assert np.isfinite(value) and float(metrics["cut_loss"]) > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # the cut loss alone reaches block 1's keys (its attention map over every token) and the tokens below it
  _, without = grad(variables["params"], 0.0)
  key_grad = lambda g: g["encoder"]["blocks_1"]["attn"]["qkv"]["kernel"][:, 1]
  assert float(jnp.abs(key_grad(grads) - key_grad(without)).max()) > 0
  with pytest.raises(ValueError, match="cut_type='all'; accepted: \\('both', 'inter', 'intra'\\)"):
    idlevit.cut_loss(step_lib.classification_loss(), model, cut_type="all")


def test_bfloat16_runs_close_to_float32():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=64, depth=2, embed_dim=32, num_heads=2, num_classes=4,
                              reduction=dict(kind="idlevit", keep_rate=0.5, locations=(1,)))
  variables, images = random_variables(model), jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  check_bfloat16(model, variables, images)


@pytest.mark.parametrize("reduction,overrides,match", [
    (dict(kind="idlevit", keep_rate=0.0), {}, "keep_rate=0.0; accepted: \\(0, 1\\]"),
    (dict(kind="idlevit", keep_rate=0.01), {}, "keep_rate=0.01 selects no patch"),
    (dict(kind="idlevit", locations=(3, 2)), {}, "locations=\\(3, 2\\); accepted: increasing blocks 0..11"),
    (dict(kind="idlevit", locations=(12,)), {}, "locations=\\(12,\\)"),
    (dict(kind="idlevit", ratio=0.5), {}, "accepts \\['keep_rate', 'locations'\\]"),
    (dict(kind="idlevit"), dict(dist_token=True), "needs exactly one prefix token, the class token"),
])
def test_bad_configs_are_one_clear_error(reduction, overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_small_patch16_224", reduction=reduction, **overrides)
