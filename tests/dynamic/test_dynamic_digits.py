"""`configs/dynamic_digits.py`: every token reduction trains on digits and learns."""

import pytest

from jaxvit.train.trainer import train_and_evaluate


@pytest.fixture(scope="module")
def unpruned(tmp_path_factory, data_dir):
  from configs import dynamic_digits
  workdir = str(tmp_path_factory.mktemp("none"))
  config = dynamic_digits.get_config("kind=none,steps=300")
  config.data.data_dir = data_dir
  return workdir, train_and_evaluate(config, workdir)


FINE_TUNED = ("idlevit", "tofu", "tcformer")  # 60 steps from the unpruned run (CI time), as IdleViT's recipe


@pytest.mark.parametrize("kind", ["tome", "evit", "dynamicvit", "exits", "ats", "patch_merger",
                                  "evo_vit"] + list(FINE_TUNED))
def test_each_reduction_learns_digits(unpruned, data_dir, tmp_path, capsys, kind):
  from configs import dynamic_digits
  workdir, baseline = unpruned
  steps = 60 if kind in FINE_TUNED else 300
  init = f",init={workdir}" if kind in ("dynamicvit",) + FINE_TUNED else ""
  config = dynamic_digits.get_config(f"kind={kind},steps={steps}{init}")
  config.data.data_dir = data_dir
  if kind == "evit":  # 3 compiled steps rather than the config's 5 (CI time)
    config.keep_rate_warmup.levels = 2
  summary = train_and_evaluate(config, str(tmp_path))
  assert baseline["final_top1"] > 0.5 and summary["final_top1"] > 0.5, (baseline, summary)  # chance: 0.1
  assert summary["gmacs"] < baseline["gmacs"] if kind != "exits" else summary["gmacs"] > baseline["gmacs"]
  out = capsys.readouterr().out
  if kind == "dynamicvit":
    assert "feature_loss" in out
  if kind == "idlevit":  # the token cut loss, through config.dynamic_loss
    assert "cut_loss" in out
  if kind == "tcformer":  # the clustering merge's norm and score start from their initialisation
    assert "parameters the reduction adds keep their initialisation (ctm)" in out
  if kind == "evit":  # the warm-up compiled one step per snapped keep rate, in order
    rates = [float(line.split("keep_rate ")[1].split()[0]) for line in out.splitlines() if "keep-rate warm-up" in line]
    assert rates == [1.0, 0.85, 0.7], rates
  if kind == "exits":  # each exit learned too; the sweep trades top-1 for MACs
    assert "exit_accuracy1" in out
    from jaxvit.early_exit import main
    main(["--config", "configs/dynamic_digits.py:kind=exits", "--workdir", str(tmp_path), "--rule", "confidence",
          "--thresholds", "0.5,1.01", "--out", str(tmp_path / "exit.md"), "--data-dir", data_dir])
    rows = capsys.readouterr().out.splitlines()[2:]
    cheap, full = ([float(x) for x in r.split("|")[2:5]] for r in rows)
    assert full[1] == 4 and cheap[1] < 4 and cheap[2] < full[2] and cheap[0] > 0.3, rows  # top-1, depth, GMACs


def test_lgvit_second_stage_trains_the_exits_on_the_frozen_backbone(data_dir, tmp_path, capsys):
  """LGViT's two stages on digits: exits with its heads trained jointly, then `exit_stage=2` distils them (its
  feature losses in the train metrics) while every backbone parameter keeps its first-stage value and the final
  head its eval top-1."""
  import flax
  import numpy as np
  from configs import dynamic_digits
  from jaxvit.train import init_from
  first, second = str(tmp_path / "stage1"), str(tmp_path / "stage2")
  config = dynamic_digits.get_config("kind=exits,exit_head=lgvit,steps=150")
  config.data.data_dir = data_dir
  stage1 = train_and_evaluate(config, first)
  assert "exit_accuracy1" in capsys.readouterr().out
  config = dynamic_digits.get_config(f"kind=exits,exit_head=lgvit,exit_stage=2,steps=30,init={first}")
  config.data.data_dir = data_dir
  stage2 = train_and_evaluate(config, second)
  assert stage2["final_top1"] == stage1["final_top1"] > 0.1, (stage1, stage2)  # the final head is frozen; chance 0.1
  out = capsys.readouterr().out
  assert "lgvit_hete" in out and "lgvit_homo" in out  # (homo: 0 with one local and one global exit)
  before, after = (flax.traverse_util.flatten_dict(init_from.load_params(w), sep="/") for w in (first, second))
  changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
  assert changed and all(k.startswith("exit_") for k in changed), changed


def test_lgvit_second_stage_needs_its_heads_and_first_stage():
  from configs import dynamic_digits
  with pytest.raises(ValueError, match="exit_stage=2 needs exit_head=lgvit and init="):
    dynamic_digits.get_config("kind=exits,exit_stage=2,init=runs/x")
  with pytest.raises(ValueError, match=r"exit_stage=3; accepted: \(1, 2\)"):
    dynamic_digits.get_config("kind=exits,exit_stage=3")


@pytest.mark.parametrize("kind", ["avit", "adavit"])
def test_adaptive_computation_learns_digits_and_saves_macs(unpruned, data_dir, tmp_path, capsys, kind):
  """A-ViT's halting / AdaViT's decisions from the unpruned run's weights, 80 steps with their losses: they learn,
  and the eval images execute fewer MACs than the full model (the static count)."""
  from configs import dynamic_digits
  config = dynamic_digits.get_config(f"kind={kind},steps=80,init={unpruned[0]}")
  config.data.data_dir = data_dir
  summary = train_and_evaluate(config, str(tmp_path))
  assert summary["final_top1"] > 0.5 and summary["eval_gmacs"] < summary["gmacs"], summary
  out = capsys.readouterr().out
  assert "GMACs executed" in out and ("ponder_loss" if kind == "avit" else "head_usage") in out


def test_cf_vit_learns_digits_and_its_coarse_exit_saves_macs(data_dir, tmp_path, capsys):
  from configs import dynamic_digits
  from jaxvit.early_exit import main
  config = dynamic_digits.get_config("kind=cf_vit,steps=400")  # the two-stage model: a longer schedule
  config.data.data_dir = data_dir
  summary = train_and_evaluate(config, str(tmp_path))
  assert summary["final_top1"] > 0.5 and "exit_accuracy0" in capsys.readouterr().out, summary
  main(["--config", "configs/dynamic_digits.py:kind=cf_vit,steps=400", "--workdir", str(tmp_path), "--rule",
        "confidence", "--thresholds", "0.5,1.01", "--out", str(tmp_path / "exit.md"), "--data-dir", data_dir])
  rows = capsys.readouterr().out.splitlines()[2:]
  cheap, full = ([float(x) for x in r.split("|")[2:5]] for r in rows)
  assert full[1] == 8 and cheap[1] < 8 and cheap[2] < full[2] and cheap[0] > 0.3, rows  # top-1, depth, GMACs


def test_dynamicvit_needs_its_unpruned_run():
  from configs import dynamic_digits
  with pytest.raises(ValueError, match="init= is required for kind=dynamicvit"):
    dynamic_digits.get_config("kind=dynamicvit")


def test_trainer_selects_the_loss_by_config():
  """`config.dynamic_loss`: the kind must match the model, and unknown hyper-parameters are one clear error."""
  import ml_collections
  import jaxvit
  from jaxvit.train.trainer import base_loss
  config = ml_collections.ConfigDict(dict(model=dict(name="avit_tiny_patch16_224"), label_smoothing=0.0,
                                          dynamic_loss=dict(kind="avit", ponder_weight=0.01)))
  model = jaxvit.create_model("avit_tiny_patch16_224", img_size=32, depth=2)
  assert callable(base_loss(config, model))
  config.dynamic_loss.ponder = 1.0
  with pytest.raises(ValueError, match=r"dynamic_loss has \['ponder'\] for kind='avit'; accepted: \['ponder_weight'"):
    base_loss(config, model)
  config.dynamic_loss = dict(kind="adavit")
  with pytest.raises(ValueError, match="kind='adavit' needs a model that makes adavit's decisions"):
    base_loss(config, model)
  config.dynamic_loss = dict(kind="act")
  with pytest.raises(ValueError, match=r"dynamic_loss kind='act'; accepted: \('avit', 'adavit', 'idlevit'\)"):
    base_loss(config, model)


def test_idlevit_needs_its_unpruned_run():
  from configs import dynamic_digits
  with pytest.raises(ValueError, match="init= is required for kind=idlevit"):
    dynamic_digits.get_config("kind=idlevit")


def test_trainer_adds_the_token_cut_loss_to_an_idlevit_reduction():
  """`config.dynamic_loss = dict(kind="idlevit")` on a ViT with that reduction: base loss + cut_weight x the token cut
  loss of its idle blocks (their mean); a model without the reduction or an unknown key is one clear error."""
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  import jaxvit
  from jaxvit.dynamic import idlevit
  from jaxvit.train.trainer import base_loss
  config = ml_collections.ConfigDict(dict(model=dict(name="deit_tiny_patch16_224"), label_smoothing=0.0,
                                          dynamic_loss=dict(kind="idlevit", cut_weight=5.0)))
  model = jaxvit.create_model("deit_tiny_patch16_224", img_size=32, depth=3, num_classes=3,
                              reduction=dict(kind="idlevit", keep_rate=0.5, locations=(1, 2)))
  rng = np.random.RandomState(0)
  out = {f"idle_attn{i}": jnp.asarray(rng.standard_normal((2, 5, 5)), jnp.float32) for i in (1, 2)}
  out.update({f"idle_mask{i}": jnp.asarray(np.concatenate([np.ones((2, 1)), rng.randint(0, 2, (2, 4))], 1),
                                           jnp.float32) for i in (1, 2)})  # the class token is always selected
  logits, batch = jnp.zeros((2, 3)), {"label": jnp.array([0, 2])}
  loss, metrics = base_loss(config, model)(logits, out, batch)
  cut = sum(idlevit.token_cut_loss(out[f"idle_attn{i}"], out[f"idle_mask{i}"]) for i in (1, 2)) / 2
  np.testing.assert_allclose(float(loss), np.log(3) + 5.0 * float(cut), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["cut_loss"]), float(cut), rtol=1e-6)
  config.dynamic_loss = dict(kind="idlevit", cutw=20.0)
  with pytest.raises(ValueError, match=r"dynamic_loss has \['cutw'\] for kind='idlevit'; accepted: \['cut_weight'"):
    base_loss(config, model)
  config.dynamic_loss = dict(kind="idlevit")
  with pytest.raises(ValueError, match=r"needs a model .*reduction=dict\(kind='idlevit'\)"):
    base_loss(config, model.clone(reduction=dict(kind="tome", r=1)))
