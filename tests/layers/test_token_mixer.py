"""`VisionTransformer(mixer=...)`: every token mixer mixes tokens, trains, and bad combinations are one clear error."""

import jax
import numpy as np
import pytest

import jaxvit
from jaxvit.layers.token_mixer import MIXERS


@pytest.mark.parametrize("mixer", MIXERS)
def test_each_mixer_mixes_tokens_and_has_gradients(mixer):
  model = jaxvit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3, mixer=mixer,
                              class_token=False, global_pool="avg", embed_dim=32, num_heads=2)
  x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  variables = model.init(jax.random.key(1), x)
  variables = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), variables)  # no zeros
  tokens = lambda x: model.apply(variables, x)[1]["block0"]  # [1, 16, 32]
  moved = x.at[:, :8, :8].add(1.0)  # only the first patch changes
  changed = np.abs(np.asarray(tokens(moved) - tokens(x))).max(axis=-1)[0]
  assert changed[0] > 0 and (changed[1:] > 1e-6).sum() >= 2, changed  # other tokens see it through the mixer
  grads = jax.grad(lambda v: model.apply(v, x)[0].sum())(variables)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_attention_free_mixers_have_the_expected_parameters():
  count = lambda mixer: jaxvit.count_params(jaxvit.create_model(
      "vit_tiny_patch16_224", mixer=mixer, class_token=False, global_pool="avg", depth=1, num_classes=0))
  n, c = 196, 192
  attention = count("attention")
  assert attention - count("pooling") == c * 3 * c + 3 * c + c * c + c  # qkv + proj
  assert count("linear") - count("pooling") == n * n + n  # ResMLP's cross-patch linear
  assert count("mlp") - count("pooling") == 2 * n * (c // 2) + c // 2 + n  # tokens -> 0.5 C -> tokens
  assert count("additive") - count("pooling") == 3 * (c * c + c) + c + c * c + c  # query, key, proj, w_g, final
  heads, d = 3, 64
  assert count("performer") - attention == int(d * np.log(d)) * d  # + the frozen random features
  assert count("linformer") - attention == 2 * n * 64  # + E and F, [N, k]
  assert count("posgu") - count("pooling") == (c * 2 * c + 2 * c) + heads * (2 + 4) + n + (c * c + c)


@pytest.mark.parametrize("overrides,match", [
    (dict(mixer="conv"), "mixer='conv'; accepted: \\('attention', 'mlp', 'linear', 'pooling', 'additive', "
                         "'performer', 'linformer', 'posgu'\\)"),
    (dict(mixer="posgu"), "class_token=True; accepted: False, .* for mixer='posgu'"),
    (dict(mixer="pooling"), "class_token=True; accepted: False, .* for mixer='pooling'"),
    (dict(mixer="mlp", pos_embed="rope_axial"),
     "pos_embed='rope_axial'; accepted: no RoPE, LRPE or FIRE with mixer='mlp'"),
    (dict(mixer="additive", reduction=dict(kind="tome", r=2)), "reduction=.*; accepted: off with mixer='additive'"),
])
def test_bad_mixer_combination_is_one_clear_error(overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_tiny_patch16_224", **overrides)
