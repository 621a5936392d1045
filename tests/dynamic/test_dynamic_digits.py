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


@pytest.mark.parametrize("kind", ["tome", "evit", "dynamicvit", "exits", "ats", "patch_merger",
                                  "evo_vit"])
def test_each_reduction_learns_digits(unpruned, data_dir, tmp_path, capsys, kind):
  from configs import dynamic_digits
  workdir, baseline = unpruned
  config = dynamic_digits.get_config(f"kind={kind},steps=300" + (f",init={workdir}" if kind == "dynamicvit" else ""))
  config.data.data_dir = data_dir
  summary = train_and_evaluate(config, str(tmp_path))
  assert baseline["final_top1"] > 0.5 and summary["final_top1"] > 0.5, (baseline, summary)  # chance: 0.1
  assert summary["gmacs"] < baseline["gmacs"] if kind != "exits" else summary["gmacs"] > baseline["gmacs"]
  out = capsys.readouterr().out
  if kind == "dynamicvit":
    assert "feature_loss" in out
  if kind == "exits":  # each exit learned too; the sweep trades top-1 for MACs
    assert "exit_accuracy1" in out
    from jaxvit.early_exit import main
    main(["--config", "configs/dynamic_digits.py:kind=exits", "--workdir", str(tmp_path), "--rule", "confidence",
          "--thresholds", "0.5,1.01", "--out", str(tmp_path / "exit.md"), "--data-dir", data_dir])
    rows = capsys.readouterr().out.splitlines()[2:]
    cheap, full = ([float(x) for x in r.split("|")[2:5]] for r in rows)
    assert full[1] == 4 and cheap[1] < 4 and cheap[2] < full[2] and cheap[0] > 0.3, rows  # top-1, depth, GMACs
  if kind == "evit":  # the warm-up compiled one step per snapped keep rate, in order
    rates = [float(line.split("keep_rate ")[1].split()[0]) for line in out.splitlines() if "keep-rate warm-up" in line]
    assert rates == [1.0, 0.925, 0.85, 0.775, 0.7], rates


def test_cf_vit_learns_digits_and_its_coarse_exit_saves_macs(data_dir, tmp_path, capsys):
  from configs import dynamic_digits
  from jaxvit.early_exit import main
  config = dynamic_digits.get_config("kind=cf_vit,steps=800")  # the two-stage model needs a longer schedule
  config.data.data_dir = data_dir
  summary = train_and_evaluate(config, str(tmp_path))
  assert summary["final_top1"] > 0.5 and "exit_accuracy0" in capsys.readouterr().out, summary
  main(["--config", "configs/dynamic_digits.py:kind=cf_vit,steps=800", "--workdir", str(tmp_path), "--rule",
        "confidence", "--thresholds", "0.5,1.01", "--out", str(tmp_path / "exit.md"), "--data-dir", data_dir])
  rows = capsys.readouterr().out.splitlines()[2:]
  cheap, full = ([float(x) for x in r.split("|")[2:5]] for r in rows)
  assert full[1] == 8 and cheap[1] < 8 and cheap[2] < full[2] and cheap[0] > 0.3, rows  # top-1, depth, GMACs


def test_dynamicvit_needs_its_unpruned_run():
  from configs import dynamic_digits
  with pytest.raises(ValueError, match="init= is required for kind=dynamicvit"):
    dynamic_digits.get_config("kind=dynamicvit")
