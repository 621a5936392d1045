"""GFNet (jaxvit.models.gfnet): the global filter against a naive DFT written with complex exponentials and against
a circular convolution, its resizing against PyTorch's bicubic interpolation, other input sizes, the error for a
grid the filter was not built for, config errors, bfloat16, and both models against the official `gfnet.py`
(when its mirror and torch are available)."""

import os
import re
import subprocess
import sys

import flax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.convert.mapping import torch_to_flax_layout
from jaxvit.layers.global_filter import GlobalFilter, resize_global_filter
from jaxvit.models.gfnet import GFNet, GFNetPyramid
from fast_jit import jit_fast
from numpy_params import random_params

OFFICIAL_REPO = "/work/.mirror/raoyongming+GFNet/repo"


def naive_global_filter(x, weight):
  """`F^-1[K (.) F[x]]` from the definitions: the orthonormal 2D DFT as a double sum of complex exponentials, the
  half-spectrum filter `K[u, v]` (v <= w / 2) applied, the inverse DFT along the rows, and along the columns the
  real inverse of a half spectrum (each v and w - v pair conjugate, the real part taken)."""
  _, h, w, _ = x.shape
  k = weight[..., 0] + 1j * weight[..., 1]  # [h, w // 2 + 1, C]
  m, n = np.arange(h), np.arange(w)
  u, v = np.arange(h), np.arange(w // 2 + 1)
  e_rows = np.exp(-2j * np.pi * np.outer(u, m) / h)  # [u, m]
  e_cols = np.exp(-2j * np.pi * np.outer(v, n) / w)  # [v, n]
  spectrum = np.einsum("um,vn,bmnc->buvc", e_rows, e_cols, x) / np.sqrt(h * w)
  z = spectrum * k
  t = np.einsum("mu,buvc->bmvc", e_rows.conj().T, z)  # inverse along the rows: [B, m, v, C]
  full = np.zeros((x.shape[0], h, w, x.shape[-1]), complex)
  for vv in range(w):
    full[:, :, vv] = t[:, :, vv] if vv <= w // 2 else t[:, :, w - vv].conj()
  e_inv = np.exp(2j * np.pi * np.outer(np.arange(w), n) / w)  # [v, n]
  return np.einsum("vn,bmvc->bmnc", e_inv, full).real / np.sqrt(h * w)


@pytest.mark.parametrize("grid", [(6, 6), (5, 8), (4, 7)])
def test_global_filter_matches_naive_dft(grid):
  x = np.random.RandomState(1).standard_normal((2, *grid, 3)).astype(np.float32)
  layer = GlobalFilter()
  params = random_params(layer, x, scale=1.0)
  got = np.asarray(jit_fast(lambda p, x: layer.apply({"params": p}, x), params, x))
  np.testing.assert_allclose(got, naive_global_filter(x.astype(np.float64), params["complex_weight"]), atol=2e-5)
  tokens = x.reshape(2, -1, 3)  # the same layer on a flat token sequence with its grid
  got_tokens = jit_fast(lambda p, t: layer.apply({"params": p}, t, grid), params, tokens)
  np.testing.assert_allclose(np.asarray(got_tokens).reshape(got.shape), got, atol=1e-6)


def test_global_filter_is_a_global_circular_convolution():
  """With `K = DFT(kappa)` (unnormalised) of a real `h x w` kernel, the layer is `x` circularly convolved with
  `kappa`, channel by channel (paper Sec. 3.2)."""
  h, w, c = 5, 6, 2
  rs = np.random.RandomState(2)
  x, kappa = rs.standard_normal((1, h, w, c)), rs.standard_normal((h, w, c))
  spectrum = np.fft.rfft2(kappa, axes=(0, 1))
  weight = np.stack([spectrum.real, spectrum.imag], -1).astype(np.float32)
  got = GlobalFilter().apply({"params": {"complex_weight": weight}}, x.astype(np.float32))
  expected = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      expected += np.roll(x, (i, j), axis=(1, 2)) * kappa[i, j]
  np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5)


def test_global_filter_rejects_another_grid():
  layer = GlobalFilter()
  params = random_params(layer, jnp.zeros((1, 6, 6, 4)))
  with pytest.raises(ValueError, match="resize_global_filter"):
    layer.apply({"params": params}, jnp.zeros((1, 8, 8, 4)))
  with pytest.raises(ValueError, match="grid"):
    layer.apply({"params": params}, jnp.zeros((1, 36, 4)))
  with pytest.raises(ValueError, match="does not hold"):
    layer.apply({"params": params}, jnp.zeros((1, 36, 4)), (5, 6))


def test_resize_global_filter_matches_torch_bicubic():
  """As `main_gfnet.py` fine-tunes at another size: a 14 x 8 filter (224 px) to 24 x 13 (384 px)."""
  torch = pytest.importorskip("torch")
  weight = np.random.RandomState(3).standard_normal((14, 8, 5, 2)).astype(np.float32)
  got = np.asarray(resize_global_filter(jnp.asarray(weight), (24, 24)))
  nchw = torch.from_numpy(weight.reshape(1, 14, 8, 10)).permute(0, 3, 1, 2)
  expected = torch.nn.functional.interpolate(nchw, size=(24, 13), mode="bicubic", align_corners=True)
  np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).reshape(24, 13, 5, 2).numpy(), atol=1e-5)
  np.testing.assert_allclose(np.asarray(resize_global_filter(jnp.asarray(weight), (14, 14))), weight, atol=1e-6)


def test_other_input_sizes_and_the_wrong_size_error():
  model = GFNet(num_classes=3, img_size=(32, 48), embed_dim=8, depth=1)
  model.validate()
  images = jnp.ones((1, 32, 48, 3))
  params = random_params(model, images)
  assert params["blocks_0"]["filter"]["complex_weight"].shape == (2, 2, 8, 2)  # 2 x 3 grid
  logits, out = jit_fast(lambda p, x: model.apply({"params": p}, x), params, images)
  assert logits.shape == (1, 3) and out["block0"].shape == (1, 6, 8)
  with pytest.raises(ValueError, match="img_size"):
    model.apply({"params": params}, jnp.ones((1, 48, 48, 3)))
  pyramid = GFNetPyramid(num_classes=3, img_size=64, embed_dims=(4, 8, 8, 8), depths=(1, 1, 1, 1))
  pyramid.validate()
  params = random_params(pyramid, jnp.ones((1, 64, 64, 3)))
  _, out = jit_fast(lambda p, x: pyramid.apply({"params": p}, x), params, jnp.ones((1, 64, 64, 3)))
  assert [out[f"stage{s}"].shape for s in range(4)] == [(1, 16, 16, 4), (1, 8, 8, 8), (1, 4, 4, 8), (1, 2, 2, 8)]
  assert params["blocks_3_0"]["filter"]["complex_weight"].shape == (2, 2, 8, 2)


def test_config_errors():
  for name, kwargs, field in (("gfnet_ti_224", dict(img_size=100), "img_size"),
                              ("gfnet_ti_224", dict(depth=0), "depth"),
                              ("gfnet_ti_224", dict(drop_path_rate=1.0), "drop_path_rate"),
                              ("gfnet_h_ti_224", dict(img_size=48), "img_size"),
                              ("gfnet_h_ti_224", dict(embed_dims=(64, 128)), "embed_dims"),
                              ("gfnet_h_ti_224", dict(mlp_ratios=(4, 4)), "mlp_ratios")):
    with pytest.raises(ValueError, match=field):
      jaxvit.create_model(name, **kwargs)


def test_bfloat16():
  for model in (GFNet(num_classes=3, img_size=32, embed_dim=8, depth=1, dtype=jnp.bfloat16),
                GFNetPyramid(num_classes=3, img_size=32, embed_dims=(4, 8, 8, 8), depths=(1, 1, 1, 1),
                             dtype=jnp.bfloat16)):
    images = jnp.ones((1, 32, 32, 3))
    params = random_params(model, images)
    logits, out = jit_fast(lambda p, x: model.apply({"params": p}, x), params, images)
    assert logits.dtype == jnp.bfloat16 and out["pre_logits"].dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(logits.astype(jnp.float32))))


def _official_module(tmp_path):
  """The official `gfnet.py` from the local mirror, imported with torch (stubs for imports newer numpy / timm
  moved); skips when either is missing."""
  pytest.importorskip("torch")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of raoyongming/GFNet")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:gfnet.py"], capture_output=True,
                          text=True, check=True).stdout
  source = source.replace("from numpy.lib.arraypad import pad\n", "")
  source = source.replace("from timm.models.layers import", "from timm.layers import")
  (tmp_path / "official_gfnet.py").write_text(source)
  sys.path.insert(0, str(tmp_path))
  try:
    import official_gfnet
  finally:
    sys.path.remove(str(tmp_path))
  return official_gfnet


def _official_name(path):
  """jaxvit param path -> official state_dict key."""
  name = re.sub(r"blocks_(\d+)_(\d+)", r"blocks.\1.\2", path)
  name = re.sub(r"blocks_(\d+)", r"blocks.\1", name)
  name = re.sub(r"patch_embed_(\d+)", r"patch_embed.\1.proj", name)
  name = re.sub(r"^patch_embed/", "patch_embed.proj/", name)
  *mods, leaf = name.split("/")
  return ".".join(mods + [{"kernel": "weight", "scale": "weight"}.get(leaf, leaf)])


@pytest.mark.parametrize("pyramid", [False, True])
def test_matches_the_official_model(tmp_path, pyramid):
  """Random official weights (perturbed LayerNorms, LayerScale and pos_embed) mapped by name give the same logits."""
  official = _official_module(tmp_path)
  import torch
  torch.manual_seed(0)
  if pyramid:
    reference = official.GFNetPyramid(img_size=64, embed_dim=[8, 16, 16, 24], depth=[1, 2, 1, 1], num_classes=5,
                                      mlp_ratio=[4, 4, 4, 4], init_values=0.5)
    model = GFNetPyramid(num_classes=5, img_size=64, embed_dims=(8, 16, 16, 24), depths=(1, 2, 1, 1))
  else:
    reference = official.GFNet(img_size=64, patch_size=16, embed_dim=16, depth=2, num_classes=5)
    model = GFNet(num_classes=5, img_size=64, embed_dim=16, depth=2)
  reference.eval()
  with torch.no_grad():
    for p in reference.parameters():
      p.add_(0.1 * torch.randn_like(p))
  state = {k: v.numpy() for k, v in reference.state_dict().items()}
  images = np.random.RandomState(4).standard_normal((2, 64, 64, 3)).astype(np.float32)
  flat = flax.traverse_util.flatten_dict(random_params(model, images), sep="/")
  assert sorted(_official_name(p) for p in flat) == sorted(state)
  params = flax.traverse_util.unflatten_dict(
      {p: torch_to_flax_layout(state[_official_name(p)], v.shape) if p.endswith("kernel") else
       state[_official_name(p)].reshape(v.shape) for p, v in flat.items()}, sep="/")
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jit_fast(lambda p, x: model.apply({"params": p}, x), params, images)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
