
import pytest

import jaxvit
from published import PUBLISHED


def test_list_models_patterns():
  assert "deit_small_patch16_224" in jaxvit.list_models()
  distilled = jaxvit.list_models("*distilled*")
  assert distilled and all("distilled" in n for n in distilled)
  assert jaxvit.list_models("no_such_*") == []


def test_unknown_name_suggests_closest():
  with pytest.raises(ValueError, match="did you mean 'deit_small_patch16_224'"):
    jaxvit.create_model("deit_smal_patch16_224")


def test_unknown_override_names_the_field_and_the_accepted_ones():
  with pytest.raises(ValueError, match=r"unknown override\(s\) \['num_clases'\]; accepted: .*num_classes"):
    jaxvit.create_model("deit_tiny_patch16_224", num_clases=10)


@pytest.mark.parametrize("override", ["num_classes", "img_size", "dtype", "param_dtype", "drop_rate", "drop_path_rate"])
def test_required_overrides_apply(override):
  value = dict(num_classes=7, img_size=32, dtype="bfloat16", param_dtype="bfloat16", drop_rate=0.1,
               drop_path_rate=0.2)[override]
  model = jaxvit.create_model("deit_tiny_patch16_224", **{override: value})
  assert getattr(model, override) == value


@pytest.mark.parametrize("field,value,match", [
    ("global_pool", "mean", "global_pool='mean'; accepted"),
    ("pos_embed", "rope", "pos_embed='rope'; accepted"),
    ("img_size", 30, "img_size=30; accepted: multiples of patch_size=16"),
    ("drop_path_rate", 1.0, r"drop_path_rate=1.0; accepted: \[0, 1\)"),
])
def test_bad_config_is_one_clear_error(field, value, match):
  with pytest.raises(ValueError, match=match):
    jaxvit.create_model("deit_tiny_patch16_224", **{field: value})


def test_every_model_has_published_numbers():
  """Adding a model means adding its published params / GMACs to tests/published.py."""
  assert sorted(PUBLISHED) == jaxvit.list_models()


def test_pretrained_cfg_normalisation():
  assert jaxvit.pretrained_cfg("vit_small_patch16_224")["mean"] == (0.5, 0.5, 0.5)
  assert jaxvit.pretrained_cfg("deit_small_patch16_224")["mean"] == (0.485, 0.456, 0.406)


def test_families_select_their_models():
  assert jaxvit.model_family("deit_small_patch16_224") == "vit" and "resnet" in jaxvit.list_families()
  assert jaxvit.list_models("resnet1*", family="resnet") == ["resnet101", "resnet101d", "resnet10t", "resnet14t",
                                                             "resnet152", "resnet152d", "resnet18", "resnet18d"]
  assert "vit_small_patch16_rope_224" in jaxvit.list_models(family="vit")
  with pytest.raises(ValueError, match="unknown model family 'resnt'; families: \\[.*'resnet'"):
    jaxvit.list_models(family="resnt")
