"""`python -m jaxvit.visualize`: ToMe's merged groups, TCFormer's clusters and EViT's kept patches drawn on an image."""

import numpy as np
import pytest

from jaxvit import visualize


@pytest.fixture(scope="module")
def image(tmp_path_factory):
  from PIL import Image
  pixels = np.zeros((240, 320, 3), np.uint8)
  pixels[:, :160], pixels[60:180, 100:220] = [200, 40, 40], [30, 160, 60]
  path = tmp_path_factory.mktemp("images") / "in.png"
  Image.fromarray(pixels).save(path)
  return str(path)


def test_tome_groups_cover_every_patch_with_the_model_token_count(image, tmp_path):
  groups = visualize.visualize("deit_tiny_patch16_224", dict(kind="tome", r=13), image, str(tmp_path / "t.png"))
  # 196 patches + class token lose 13 per block: 196 - 13 * 4, - 13 * 8, - 13 * 12 patch groups left
  assert [len(np.unique(g)) for g in groups] == [144, 92, 40]
  assert all(g.shape == (196,) and g.min() >= 0 for g in groups) and (tmp_path / "t.png").stat().st_size


def test_evit_shows_the_kept_patches_after_each_pruning_block(image, tmp_path):
  groups = visualize.visualize("deit_tiny_patch16_224", dict(kind="evit", keep_rate=0.7, fuse_token=True), image,
                               str(tmp_path / "e.png"))
  assert [int((g >= 0).sum()) for g in groups] == [138, 97, 68]
  kept_before = groups[0] >= 0
  assert np.all(kept_before[groups[1] >= 0])  # a pruned patch never comes back


def test_dynamicvit_shows_the_patches_its_predictors_keep(image, tmp_path):
  groups = visualize.visualize("deit_tiny_patch16_224", dict(kind="dynamicvit", keep_rate=0.7), image,
                               str(tmp_path / "d.png"))
  assert [int((g >= 0).sum()) for g in groups] == [137, 96, 67]


def test_tcformer_shows_its_clusters_and_other_kinds_are_one_clear_error(image, tmp_path):
  groups = visualize.visualize("deit_tiny_patch16_224", dict(kind="tcformer"), image, str(tmp_path / "c.png"))
  assert len(groups) == 1 and groups[0].shape == (196,)  # the 196 patches in ceil(196 / 4) = 49 clusters
  assert sorted(np.unique(groups[0])) == list(range(49)) and (tmp_path / "c.png").stat().st_size
  with pytest.raises(ValueError, match="kind 'ats' cannot be drawn; accepted: \\('tome', 'tcformer'"):
    visualize.visualize("deit_tiny_patch16_224", dict(kind="ats"), image, str(tmp_path / "a.png"))


def test_cli_writes_the_png_and_rejects_two_reductions(image, tmp_path, capsys):
  visualize.main(["--model", "deit_tiny_patch16_224", "--reduction", "evit:keep_rate=0.5", "--image", image,
                  "--out", str(tmp_path / "cli.png")])
  assert "wrote" in capsys.readouterr().out and (tmp_path / "cli.png").exists()
  with pytest.raises(SystemExit, match="give exactly one reduction"):
    visualize.main(["--model", "deit_tiny_patch16_224", "--reduction", "tome:r=2,tome:r=3", "--image", image,
                    "--out", str(tmp_path / "x.png")])
