"""CycleMLP: the Cycle FC against torchvision's deform_conv2d with the official offsets, logits, parameter count
and fvcore GMACs against the official PyTorch model (from the local mirror; skipped without it), other input
sizes, bad configs and bfloat16."""

import contextlib
import io
import os
import subprocess
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

import jaxvit
from jaxvit.bench.flops import count_macs
from jaxvit.layers.cycle_fc import CycleFC, cycle_offsets, shift_channels
from published import PUBLISHED

OFFICIAL_REPO = "/work/.mirror/ShoufaChen+CycleMLP/repo"


@pytest.fixture(scope="module")
def official():
  torch = pytest.importorskip("torch")
  pytest.importorskip("timm")
  pytest.importorskip("torchvision")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of ShoufaChen/CycleMLP")
  show = lambda path: subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", f"HEAD:{path}"],  # noqa: E731
                                     capture_output=True, text=True, check=True).stdout
  source = show("cycle_mlp.py").replace("@register_model\n", "")  # keep timm's registry untouched
  source = source.replace("from timm.models.layers.helpers import to_2tuple", "from timm.layers import to_2tuple")
  module = types.ModuleType("cycle_mlp_official")
  with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.simplefilter("ignore")
    exec(compile(source, "cycle_mlp.py", "exec"), module.__dict__)
  return torch, module


def to_jaxvit(state_dict, variables):
  """Official state dict -> jaxvit variables (`network.0.1.attn.sfc_h.weight` -> `network_0_1/attn/sfc_h/kernel`)."""
  out = {}
  for path, target in flatten_dict(variables["params"]).items():
    parts = [p.replace("_", ".") if p.startswith("network_") else p for p in path[:-1]]
    leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
    t = state_dict[".".join(parts + [leaf])].numpy()
    if path[-1] == "kernel":
      t = t.transpose(2, 3, 1, 0) if target.ndim == 4 else t.reshape(t.shape[:2]).T
    out[path] = jnp.asarray(t)
  return {"params": unflatten_dict(out)}


def test_offsets_cycle_with_the_channel_index():
  assert cycle_offsets(7, 3) == [0, 1, -1, 0, 1, -1, 0]
  x = jnp.arange(2 * 4 * 5 * 3, dtype=jnp.float32).reshape(2, 4, 5, 3)
  y = shift_channels(x, [0, 1, -1], axis=2)  # channel 1 reads one column right, channel 2 one left, zero-filled
  np.testing.assert_array_equal(y[..., 0], x[..., 0])
  np.testing.assert_array_equal(y[:, :, :4, 1], x[:, :, 1:, 1])
  np.testing.assert_array_equal(y[:, :, 4, 1], 0)
  np.testing.assert_array_equal(y[:, :, 1:, 2], x[:, :, :4, 2])
  np.testing.assert_array_equal(y[:, :, 0, 2], 0)


@pytest.mark.parametrize("kernel_size", [(1, 3), (3, 1), (1, 5)])
def test_cycle_fc_matches_deform_conv(official, kernel_size):
  torch, module = official
  torch.manual_seed(0)
  ref = module.CycleFC(6, 4, kernel_size).eval()
  x = np.random.RandomState(0).standard_normal((2, 5, 7, 6)).astype(np.float32)
  with torch.no_grad():
    torch.nn.init.normal_(ref.bias)
    expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  params = {"kernel": jnp.asarray(ref.weight.detach().numpy()[:, :, 0, 0].T), "bias": jnp.asarray(ref.bias.detach())}
  got = CycleFC(4, kernel_size).apply({"params": params}, x)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [64, 50])  # 50: odd stage maps (13, 7, 4, 2)
def test_logits_match_official(official, size):
  torch, module = official
  model = jaxvit.create_model("cyclemlp_b1", img_size=size)
  torch.manual_seed(0)
  ref = module.CycleMLP_B1().eval()
  with torch.no_grad():  # random, non-trivial LayerNorms, biases and head
    for name, t in ref.state_dict().items():
      if t.dtype.is_floating_point and not name.endswith("offset"):
        t.add_((0.1 if t.ndim == 1 else 0.01) * torch.randn_like(t))
  images = np.random.RandomState(0).standard_normal((2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  variables = to_jaxvit(ref.state_dict(), jax.eval_shape(lambda: jaxvit.init_variables(model)))
  logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, images)
  assert np.abs(expected[0] - expected[1]).max() > 1e-2  # the logits depend on the image, not only on biases
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def official_counts(torch, module, name):
  """The official `main.py --flops` count: fvcore with `deform_conv2d` counted as the 1x1 conv it is (the repo's
  `utils.sfc_flop_jit`: in x out x H x W), plus sum(p.numel()) (the fixed `offset` buffers are not parameters)."""
  from fvcore.nn import FlopCountAnalysis
  from fvcore.nn.jit_handles import conv_flop_count, get_shape

  def sfc_flop_jit(inputs, outputs):
    x, w = inputs[:2]
    return conv_flop_count(get_shape(x), get_shape(w), get_shape(outputs[0]))

  model = getattr(module, name)().eval()
  flops = FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224))
  flops.set_op_handle("torchvision::deform_conv2d", sfc_flop_jit)
  flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
  return sum(p.numel() for p in model.parameters()), flops.total()


@pytest.mark.parity_all
@pytest.mark.parametrize("name", ["cyclemlp_b1", "cyclemlp_b2", "cyclemlp_b3", "cyclemlp_b4", "cyclemlp_b5"])
def test_params_and_gmacs_match_official(official, name):
  torch, module = official
  params, macs = official_counts(torch, module, "CycleMLP_B" + name[-1])
  model = jaxvit.create_model(name)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  assert jaxvit.utils.count_params(variables["params"]) == params
  ours = count_macs(model, variables, jnp.zeros((1, 224, 224, 3)))["total"]
  assert round(ours / 1e9, 2) == round(macs / 1e9, 2) == PUBLISHED[name][1]
  assert round(params / 1e6, 2) == PUBLISHED[name][0]


def test_other_sizes_train_backward_and_bfloat16():
  model = jaxvit.create_model("cyclemlp_b1", img_size=40, depths=(1, 1, 1, 1), embed_dims=(8, 12, 16, 20), num_classes=7, drop_path_rate=0.1)
  variables = jaxvit.init_variables(model)
  x = jax.random.normal(jax.random.key(0), (2, 40, 40, 3))
  rngs = {"drop_path": jax.random.key(2)}
  logits, out = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rngs=r))(variables, x, rngs)
  assert logits.shape == (2, 7) and out["stage3"].shape == (2, 2, 2, 20)
  assert jax.jit(model.apply)(variables, jnp.zeros((1, 37, 53, 3)))[1]["stage3"].shape == (1, 2, 2, 20)
  grads = jax.jit(jax.grad(lambda v: (model.apply(v, x)[1]["pre_logits"] ** 2).sum()))(variables)  # the head starts at zero
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads["params"]["network_0_0"]["attn"]["sfc_h"]["kernel"]).max() > 0
  half = model.clone(dtype=jnp.bfloat16)
  low = jax.jit(half.apply)(variables, x.astype(jnp.bfloat16))[0]
  full = jax.jit(model.apply)(variables, x)[0]
  assert low.dtype == jnp.bfloat16
  assert np.abs(np.asarray(low, np.float32) - full).max() < 0.1 * np.abs(full).max() + 0.05


def test_bad_configs():
  with pytest.raises(ValueError, match=r"mlp_ratios=\(4, 4\); accepted: one entry per stage \(4, as depths\)"):
    jaxvit.create_model("cyclemlp_b1", mlp_ratios=(4, 4))
  with pytest.raises(ValueError, match=r"depths=\(2, 0, 4, 2\); accepted: integers >= 1"):
    jaxvit.create_model("cyclemlp_b1", depths=(2, 0, 4, 2))
  with pytest.raises(ValueError, match=r"drop_path_rate=1.0; accepted: \[0, 1\)"):
    jaxvit.create_model("cyclemlp_b1", drop_path_rate=1.0)
  with pytest.raises(ValueError, match=r"kernel_size=\(3, 3\); accepted: \(1, k\) or \(k, 1\)"):
    CycleFC(4, (3, 3)).init(jax.random.key(0), jnp.zeros((1, 4, 4, 4)))
