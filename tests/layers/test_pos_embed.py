import numpy as np
import pytest

from jaxvit.layers import bicubic_resize_matrix, resample_abs_pos_embed


@pytest.mark.parametrize("n_in,n_out", [(14, 24), (14, 7), (14, 14), (7, 3)])
def test_resize_weights_are_normalised(n_in, n_out):
  w = bicubic_resize_matrix(n_in, n_out)
  assert w.shape == (n_out, n_in)
  np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
  if n_in == n_out:
    np.testing.assert_allclose(w, np.eye(n_in), atol=1e-12)


def test_resample_keeps_prefix_and_constant_grid():
  posemb = np.concatenate([np.full((1, 2, 4), 7.0), np.ones((1, 14 * 14, 4))], axis=1).astype(np.float32)
  out = resample_abs_pos_embed(posemb, (10, 20), num_prefix_tokens=2)
  assert out.shape == (1, 2 + 200, 4)
  np.testing.assert_array_equal(out[:, :2], 7.0)
  np.testing.assert_allclose(out[:, 2:], 1.0, atol=1e-6)  # a constant field stays constant


def test_non_square_needs_old_grid():
  with pytest.raises(ValueError, match="pass old_grid"):
    resample_abs_pos_embed(np.zeros((1, 12, 4), np.float32), (4, 4))


@pytest.mark.parity
@pytest.mark.parametrize("old,new", [((14, 14), (24, 24)), ((14, 14), (7, 7)), ((14, 14), (12, 20))])
@pytest.mark.parametrize("prefix", [0, 1])
@pytest.mark.parametrize("xp", ["numpy", "jax"])
def test_resample_matches_timm(old, new, prefix, xp):
  import jax.numpy as jnp
  import torch
  from timm.layers import resample_abs_pos_embed as timm_resample
  posemb = np.random.RandomState(0).standard_normal((1, prefix + old[0] * old[1], 16)).astype(np.float32)
  ref = timm_resample(torch.from_numpy(posemb), list(new), list(old), num_prefix_tokens=prefix).numpy()
  got = resample_abs_pos_embed(posemb if xp == "numpy" else jnp.asarray(posemb), new, old, num_prefix_tokens=prefix)
  np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5)


def test_scaling_ablation_builds_every_position_encoding():
  """`jaxvit.bench.components` derives its variants from `vit.POS_EMBEDS`: each new option (PEG, FIRE, LRPE) builds
  and traces on the ablation's backbone (shrunk), with the parameters it adds."""
  import jax
  import jaxvit
  from jaxvit.bench.components import scaling_variants
  variants = scaling_variants((32,), depth=1, embed_dim=32, num_heads=2)
  counts = {}
  for label, (name, overrides) in variants.items():
    if label.startswith("attention / "):
      model = jaxvit.create_model(name, **overrides)
      jax.eval_shape(lambda: jaxvit.init_variables(model))
      counts[overrides["pos_embed"]] = jaxvit.count_params(model)
  assert {"peg", "fire", "lrpe"} <= set(counts)
  assert counts["peg"] - counts["none"] == 10 * 32  # one 3x3 depthwise PEG with bias after the single block
  assert counts["fire"] - counts["none"] == (2 * 32 + 32) + (32 * 2 + 2) + 2  # FIRE's MLP, c and L
  assert counts["lrpe"] - counts["none"] == 2 * 2 * 16  # LRPE's angle rates (x, y) per head and channel
