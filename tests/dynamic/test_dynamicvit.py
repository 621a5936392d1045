"""DynamicViT (`jaxvit.dynamic.dynamicvit`) on the ViT: the official model's pruned inference, keep
counts, FLOPs, and the masked training path.

DYNAMICVIT_ORACLE: `raoyongming/DynamicViT` `models/dyvit.py` (`VisionTransformerDiffPruning`, DeiT-S,
rho 0.7 at blocks 3, 6, 9) in eval mode with the weights of timm's `deit_small_patch16_224` seeded as
in the parity tests and score predictors from `predictor_weights()`, run once on the parity tests' two
images (first 8 logits per image, argmax), and fvcore's count of that model: 2.987611968 GFLOPs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvit
from jaxvit.bench.flops import count_macs
from dynamic_oracle import check_oracle

DYNAMICVIT_ORACLE = ([1.3816274, -0.372784, -0.7422869, -0.1258104, 0.0954307, 1.0273926, 0.1824522, -0.5319784],
                     [0.8744811, -0.4757703, -1.0172955, -0.322653, 0.198613, 1.1533582, -0.1922632, -0.4857042],
                     [629, 798])


def predictor_weights(dim=384, stages=3):
  """The oracle's predictors, as an official DynamicViT checkpoint names them (torch layout)."""
  r = np.random.RandomState(3)
  torch_names = (("in_conv.0.weight", (dim,)), ("in_conv.0.bias", (dim,)), ("in_conv.1.weight", (dim, dim)),
                 ("in_conv.1.bias", (dim,)), ("out_conv.0.weight", (dim // 2, dim)), ("out_conv.0.bias", (dim // 2,)),
                 ("out_conv.2.weight", (dim // 4, dim // 2)), ("out_conv.2.bias", (dim // 4,)),
                 ("out_conv.4.weight", (2, dim // 4)), ("out_conv.4.bias", (2,)))
  return {f"score_predictor.{s}.{name}": ((1.0 if name == "in_conv.0.weight" else 0.0) +
                                          (1.0 if name == "in_conv.0.weight" else 0.1) * r.randn(*shape)
                                          ).astype(np.float32)
          for s in range(stages) for name, shape in torch_names}


@pytest.mark.parity
def test_deit_small_with_dynamicvit_prunes_like_the_official_model(seeded_deit_small):
  """An official-style checkpoint (timm's DeiT-S names + `score_predictor.*`) converts and prunes as the
  official model does."""
  from jaxvit.convert import convert_state_dict
  _, _, images, state_dict = seeded_deit_small
  reduction = dict(kind="dynamicvit", keep_rate=0.7)
  model, variables = convert_state_dict("deit_small_patch16_224", dict(state_dict, **predictor_weights()),
                                        reduction=reduction)
  assert model.reduction == reduction
  check_oracle(model, variables, images, *DYNAMICVIT_ORACLE)


def test_keep_counts_and_gmacs_of_deit_small_rho_0_7():
  """int(196 rho^s) = 137, 96, 67 patch tokens; fvcore counts the official model at 2.9876 GFLOPs
  (MACs; the paper prints 2.9), 0.1037 of them in the predictors."""
  model = jaxvit.create_model("deit_small_patch16_224", reduction=dict(kind="dynamicvit", keep_rate=0.7))
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda: jaxvit.init_variables(model))
  _, out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert [out[f"block{i}"].shape[1] - 1 for i in range(12)] == [196] * 3 + [137] * 3 + [96] * 3 + [67] * 3
  assert count_macs(model, variables, images)["total"] == 2_987_611_968


def small():
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=64, depth=4,
                              reduction=dict(kind="dynamicvit", keep_rate=0.5, locations=(1, 2)))
  variables = jaxvit.init_variables(model)
  head = jax.random.normal(jax.random.key(1), variables["params"]["head"]["kernel"].shape)
  return model, dict(variables["params"], head=dict(variables["params"]["head"], kernel=head))


def test_training_masks_every_token_and_trains_the_predictors_straight_through():
  model, params = small()
  images, labels = jax.random.normal(jax.random.key(0), (4, 64, 64, 3)), jnp.array([0, 1, 2, 3])
  rngs = {"gumbel": jax.random.key(5), "dropout": jax.random.key(6), "drop_path": jax.random.key(7)}

  def loss(params):
    logits, out = model.apply({"params": params}, images, train=True, rngs=rngs)
    assert all(out[f"block{i}"].shape == (4, 17, 192) for i in range(4))  # static: nothing dropped in training
    keep = out["keep_decision1"].mean()  # DynamicViT's ratio loss pulls this towards rho
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)) + (keep - 0.5) ** 2, out

  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  first, second = np.asarray(out["keep_decision1"]), np.asarray(out["keep_decision2"])
  assert set(np.unique(first)) <= {0.0, 1.0} and np.all(second <= first)  # hard, and a dropped token stays dropped
  assert np.isfinite(value)
  assert float(jnp.abs(grads["encoder"]["score_predictor_0"]["out_fc3"]["kernel"]).sum()) > 0


def test_inference_keeps_the_configured_count():
  model, params = small()
  _, out = model.apply({"params": params}, jax.random.normal(jax.random.key(0), (2, 64, 64, 3)))
  assert [out[f"block{i}"].shape[1] for i in range(4)] == [17, 9, 5, 5]  # int(16 * 0.5), int(16 * 0.25)
  assert out["kept1"].shape == (2, 8) and out["kept2"].shape == (2, 4)


@pytest.mark.parametrize("reduction,overrides,match", [
    (dict(kind="dynamicvit", keep_rate=0.0), {}, "keep_rate=0.0; accepted: \\(0, 1\\]"),
    (dict(kind="dynamicvit", locations=(6, 3)), {}, "locations=\\(6, 3\\); accepted: increasing blocks 0..11"),
    (dict(kind="dynamicvit"), dict(dist_token=True), "exactly one prefix token"),
])
def test_bad_dynamicvit_config_names_the_field(reduction, overrides, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_tiny_patch16_224", reduction=reduction, **overrides)


def test_dynamicvit_loss_terms():
  """Ratio term: kept fractions 0.5 and 0.25 against targets 0.7 and 0.49; token term: the mean squared
  error over the two tokens kept to the end only."""
  from jaxvit.distill import feature
  first = jnp.array([[1.0, 1.0, 0.0, 0.0]])
  last = jnp.array([[1.0, 0.0, 0.0, 0.0]])
  student, teacher = jnp.zeros((1, 4, 2)), jnp.array([[[1.0, 3.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]])
  got = feature.dynamicvit([first, last], student, teacher, keep_rate=0.7, ratio_weight=2.0, token_weight=0.5)
  want = 2.0 * ((0.5 - 0.7) ** 2 + (0.25 - 0.49) ** 2) / 2 + 0.5 * (1.0 + 9.0) / 2
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_recipe_starts_from_converted_deit_weights_on_mock_imagenet(tmp_path, capsys):
  """`configs/dynamicvit_deit_small.py:runlocal`: student and teacher from one converted DeiT-S (random
  weights, 2 blocks); the predictors keep their initialisation, the backbone learns at 1 / 100."""
  import tensorflow_datasets as tfds
  from configs import dynamicvit_deit_small
  from jaxvit.convert import save_converted
  from jaxvit.train.trainer import train_and_evaluate
  deit = jaxvit.create_model("deit_small_patch16_224", depth=2, img_size=64)
  save_converted(str(tmp_path / "deit_s"), jaxvit.init_variables(deit), "deit_small_patch16_224",
                 dict(depth=2, img_size=64))
  config = dynamicvit_deit_small.get_config(f"init={tmp_path / 'deit_s'},runlocal")
  config.async_checkpoints = False  # mock_data swaps in a fake file system while a dataset is built
  with tfds.testing.mock_data(num_examples=64):
    summary = train_and_evaluate(config, str(tmp_path / "run"))
  out = capsys.readouterr().out
  assert summary["steps"] == 6 and "feature_loss" in out and "distill_loss" in out
  assert "parameters the reduction adds keep their initialisation (score_predictor_0, score_predictor_1)" in out


def test_lr_multipliers_scale_parameter_groups():
  from jaxvit.train import optim
  params = {"encoder": {"score_predictor_0": {"w": 1.0}, "blocks_0": {"w": 1.0}}, "head": {"w": 1.0}}
  scales = optim.multipliers_for(params, {"score_predictor": 1.0, "encoder": 0.5, "default": 0.01})
  assert scales == {"encoder": {"score_predictor_0": {"w": 1.0}, "blocks_0": {"w": 0.5}}, "head": {"w": 0.01}}


def test_freeze_until_holds_a_group_still_for_its_first_updates():
  """DynamicViT's `fix_step`: the backbone waits, the predictors learn from the first update."""
  import optax
  from jaxvit.train import optim
  params = {"score_predictor_0": {"w": jnp.ones(2)}, "blocks_0": {"w": jnp.ones(2)}}
  tx = optax.chain(optax.sgd(1.0), optim.freeze_until({"default": 2}))
  state = tx.init(params)
  moved = []
  for _ in range(3):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    params = optax.apply_updates(params, updates)
    moved.append({k: float(v["w"][0]) for k, v in params.items()})
  assert moved == [{"score_predictor_0": 1.0, "blocks_0": 1.0}, {"score_predictor_0": 1.0, "blocks_0": 1.0},
                   {"score_predictor_0": 0.0, "blocks_0": 0.0}]
  tx = optax.chain(optax.sgd(1.0), optim.freeze_until({"default": 2, "score_predictor": 0}))
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert float(updates["score_predictor_0"]["w"][0]) == -1.0 and float(updates["blocks_0"]["w"][0]) == 0.0


@pytest.mark.parity
def test_convert_cli_takes_an_official_dynamicvit_checkpoint(tmp_path, capsys):
  """`python -m jaxvit.convert --reduction dynamicvit:keep_rate=0.5`: the predictors convert, the reduction is
  saved with the weights, and the converted directory loads as the reduced model."""
  import timm
  from safetensors.numpy import save_file
  from jaxvit.convert import load_converted
  from jaxvit.convert.__main__ import main
  state = {k: v.numpy() for k, v in timm.create_model("deit_tiny_patch16_224").state_dict().items()}
  save_file(dict(state, **predictor_weights(192)), str(tmp_path / "dyvit.safetensors"))
  main(["--model", "deit_tiny_patch16_224", "--checkpoint", str(tmp_path / "dyvit.safetensors"), "--out",
        str(tmp_path / "out"), "--reduction", "dynamicvit:keep_rate=0.5"])
  assert "converted deit_tiny_patch16_224" in capsys.readouterr().out
  loaded, variables = load_converted(str(tmp_path / "out"))
  assert loaded.reduction == dict(kind="dynamicvit", keep_rate=0.5)
  np.testing.assert_allclose(variables["params"]["encoder"]["score_predictor_2"]["in_proj"]["bias"],
                             predictor_weights(192)["score_predictor.2.in_conv.1.bias"])
  with pytest.raises(SystemExit):
    main(["--model", "deit_tiny_patch16_224", "--checkpoint", "x.pth", "--out", "o", "--reduction", "evit:",
          "--verify"])
