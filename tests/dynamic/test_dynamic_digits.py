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


@pytest.mark.parametrize("kind", ["tome", "evit", "dynamicvit"])
def test_each_reduction_learns_digits(unpruned, data_dir, tmp_path, capsys, kind):
  from configs import dynamic_digits
  workdir, baseline = unpruned
  config = dynamic_digits.get_config(f"kind={kind},steps=300" + (f",init={workdir}" if kind == "dynamicvit" else ""))
  config.data.data_dir = data_dir
  summary = train_and_evaluate(config, str(tmp_path))
  assert baseline["final_top1"] > 0.5 and summary["final_top1"] > 0.5, (baseline, summary)  # chance: 0.1
  assert summary["gmacs"] < baseline["gmacs"]
  if kind == "dynamicvit":
    assert "feature_loss" in capsys.readouterr().out


def test_dynamicvit_needs_its_unpruned_run():
  from configs import dynamic_digits
  with pytest.raises(ValueError, match="init= is required for kind=dynamicvit"):
    dynamic_digits.get_config("kind=dynamicvit")
