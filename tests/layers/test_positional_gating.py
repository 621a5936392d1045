"""PosMLP's positional gating unit (`jaxvit.layers.positional_gating`) against the official `QuaMap` /
`LearnedPosMap` (Zhicaiwww/PosMLP `models/posmlp2D.py`, from the local mirror; skipped without it)."""

import os
import subprocess
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxvit.layers.positional_gating import PositionalGatingUnit, quadratic_map

OFFICIAL_REPO = "/work/.mirror/Zhicaiwww+PosMLP/repo"


def _official():
  torch = pytest.importorskip("torch")
  pytest.importorskip("einops")
  pytest.importorskip("timm")
  if not os.path.isdir(OFFICIAL_REPO):
    pytest.skip("no local mirror of Zhicaiwww/PosMLP")
  source = subprocess.run(["git", "--git-dir", OFFICIAL_REPO, "show", "HEAD:models/posmlp2D.py"],
                          capture_output=True, text=True, check=True).stdout
  module = types.ModuleType("posmlp2D_official")
  exec(compile(source, "posmlp2D.py", "exec"), module.__dict__)
  return torch, module


@pytest.mark.parametrize("position_map", ["quadratic", "learned"])
def test_matches_the_official_gating(position_map):
  torch, official = _official()
  grid, groups, width = (4, 4), 4, 16
  torch.manual_seed(0)
  ref = (official.QuaMap(4, gamma=groups) if position_map == "quadratic" else official.LearnedPosMap(4, gamma=groups))
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(0.3 * torch.randn_like(p))
  x = np.random.RandomState(0).standard_normal((2, 16, 2 * width)).astype(np.float32)
  with torch.no_grad():
    u, v = torch.from_numpy(x)[:, None].chunk(2, dim=-1)  # one window: [B, 1, N, C]
    expected = (ref(u) * v)[:, 0].numpy()
  state = {k: v.numpy() for k, v in ref.state_dict().items()}
  if position_map == "quadratic":
    params = dict(attention_centers=state["attention_centers"], attention_spreads=state["attention_spreads"])
  else:
    params = dict(pos=dict(relative_position_bias_table=state["window_relative_position_bias_table"]))
  params["token_proj_n_bias"] = state["token_proj_n_bias"].reshape(-1)
  layer = PositionalGatingUnit(grid, groups, position_map)
  got = layer.apply({"params": jax.tree.map(np.asarray, params)}, x)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_quadratic_maps_are_distributions_over_the_tokens_and_errors_name_the_field():
  layer = PositionalGatingUnit((3, 5), 2)
  x = jax.random.normal(jax.random.key(0), (1, 15, 8))
  variables = layer.init(jax.random.key(1), x)
  params = nn.unbox(variables["params"])
  weights = np.asarray(quadratic_map(params["attention_centers"], params["attention_spreads"], (3, 5)))
  assert weights.shape == (2, 15, 15)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  assert np.all(weights > 0)
  grads = jax.grad(lambda p: layer.apply({"params": p}, x).sum())(params)
  assert all(np.any(np.asarray(g)) for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match="position_map='gaussian'; accepted: \\('quadratic', 'learned'\\)"):
    PositionalGatingUnit((3, 5), 2, "gaussian").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="needs 3x5 tokens and a width 2 x a multiple of groups=3"):
    PositionalGatingUnit((3, 5), 3).init(jax.random.key(0), x)
