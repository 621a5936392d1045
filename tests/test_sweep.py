"""`python -m jaxvit.sweep` over `configs/ablation_components.py`: the grid, the commands, a real two-cell run."""

import json
import os

import pytest

from jaxvit import sweep

CONFIG = "configs/ablation_components.py"


def test_grid_cells_are_the_product_of_the_values():
  grid = sweep.parse_grid(["mixer=attention,pooling", "pos_embed=learn+rope_axial"])
  assert sweep.cells(grid, "steps=10") == [("mixer_attention-pos_embed_learn+rope_axial",
                                            "steps=10,mixer=attention,pos_embed=learn+rope_axial"),
                                           ("mixer_pooling-pos_embed_learn+rope_axial",
                                            "steps=10,mixer=pooling,pos_embed=learn+rope_axial")]
  with pytest.raises(ValueError, match="--grid 'mixer': expected key=value1,value2"):
    sweep.parse_grid(["mixer"])


def test_print_commands_checks_every_cell_first(capsys, monkeypatch):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sweep.main([CONFIG, "--grid", "mixer=mlp,additive", "--arg", "steps=50", "--workdir", "w", "--print-commands"])
  assert capsys.readouterr().out.splitlines() == [
      f"python -m jaxvit.main --config={CONFIG}:steps=50,mixer={m} --workdir=w/mixer_{m}" for m in ("mlp", "additive")]
  with pytest.raises(SystemExit, match="mixer='conv'; accepted: \\('attention', 'mlp'"):
    sweep.main([CONFIG, "--grid", "mixer=mlp,conv", "--print-commands"])
  with pytest.raises(SystemExit, match="pos_embed='rope_axial'; accepted: no RoPE, LRPE or FIRE with mixer='pooling'"):
    sweep.main([CONFIG, "--grid", "mixer=pooling", "pos_embed=rope_axial", "--print-commands"])


@pytest.mark.slow
def test_sweep_trains_each_cell_and_tabulates(tmp_path, data_dir, capsys, monkeypatch):
  monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  workdir = str(tmp_path)
  sweep.main([CONFIG, "--grid", "mixer=attention,pooling", "--arg", "runlocal", "--workdir", workdir])
  table = capsys.readouterr().out.splitlines()
  assert table[0].startswith("| cell | top-1 | params (M) | GMACs | img/s")
  rows = json.load(open(os.path.join(workdir, "sweep.json")))
  assert [r["cell"] for r in rows] == ["mixer_attention", "mixer_pooling"]
  assert rows[1]["params_m"] < rows[0]["params_m"] and rows[1]["gmacs"] < rows[0]["gmacs"]  # pooling: no weights
  assert all(r["steps"] == 6 and r["images_per_s"] > 0 for r in rows)
  os.remove(os.path.join(workdir, "mixer_pooling", "summary.json"))  # only that cell runs again
  sweep.main([CONFIG, "--grid", "mixer=attention,pooling", "--arg", "runlocal", "--workdir", workdir])
  assert "mixer_attention: done before" in capsys.readouterr().err
