"""`python -m jaxvit.convert`: timm checkpoint files -> orbax checkpoints, with clear errors."""

import jax
import numpy as np
import pytest

from jaxvit.convert import ConversionError, convert_state_dict, load_converted, read_state_dict
from jaxvit.convert.__main__ import main

pytestmark = pytest.mark.parity  # writes checkpoints with torch / timm


@pytest.fixture(scope="module")
def timm_deit(tmp_path_factory):
  import timm
  import torch
  from safetensors.torch import save_file
  torch.manual_seed(0)
  model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  folder = tmp_path_factory.mktemp("timm")
  save_file(model.state_dict(), folder / "deit.safetensors")
  torch.save({"model": model.state_dict()}, folder / "deit.pth")
  return model, folder


def logits_of(model, variables, size):
  x = np.random.RandomState(0).standard_normal((2, size, size, 3)).astype(np.float32)
  return x, np.asarray(jax.jit(lambda v, x: model.apply(v, x)[0])(variables, x))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_cli_writes_a_loadable_checkpoint(timm_deit, tmp_path, fmt, capsys):
  import torch
  reference, folder = timm_deit
  main(["--model", "deit_tiny_patch16_224", "--checkpoint", str(folder / f"deit.{fmt}"), "--out", str(tmp_path),
        "--verify"])
  assert "verify: max abs logit difference vs timm" in capsys.readouterr().out
  model, variables = load_converted(str(tmp_path))
  x, got = logits_of(model, variables, 224)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_cli_new_resolution_and_classes(timm_deit, tmp_path, capsys):
  _, folder = timm_deit
  main(["--model", "deit_tiny_patch16_224", "--checkpoint", str(folder / "deit.safetensors"), "--out",
        str(tmp_path), "--img-size", "64", "--num-classes", "10", "--verify"])
  out = capsys.readouterr().out
  assert "head re-initialised for 10 classes: checkpoint head.bias has shape (1000,), the model needs (10,)" in out
  diff = float(out.split("vs timm = ")[1])
  assert diff < 1e-4
  model, variables = load_converted(str(tmp_path))
  assert (model.img_size, model.num_classes) == (64, 10)
  assert variables["params"]["pos_embed"].shape == (1, 1 + 16, 192)
  assert not np.any(variables["params"]["head"]["kernel"])


def test_mismatched_checkpoint_names_the_keys(timm_deit, tmp_path):
  _, folder = timm_deit
  state = read_state_dict(str(folder / "deit.safetensors"))
  state["blocks.0.extra.weight"] = np.zeros(3, np.float32)
  del state["blocks.3.mlp.fc2.bias"]
  with pytest.raises(ConversionError) as err:
    convert_state_dict("deit_small_patch16_224", state)
  message = str(err.value)
  assert "missing (1): blocks.3.mlp.fc2.bias" in message
  assert "unexpected (1): blocks.0.extra.weight" in message
  assert "mis-shaped" in message and "blocks.0.attn.qkv.weight (576, 192)" in message
  with pytest.raises(SystemExit, match="error: checkpoint does not fit"):
    main(["--model", "deit_small_patch16_224", "--checkpoint", str(folder / "deit.safetensors"), "--out",
          str(tmp_path)])


def test_pickled_objects_are_refused(tmp_path):
  import pickle
  import torch

  torch.save({"model": {"w": torch.zeros(2)}, "callback": print}, tmp_path / "evil.pth")
  with pytest.raises(pickle.UnpicklingError):
    read_state_dict(str(tmp_path / "evil.pth"))


def test_unknown_format_and_model(tmp_path):
  (tmp_path / "w.npz").write_bytes(b"")
  with pytest.raises(ValueError, match="accepted formats are .safetensors, .pth, .pt, .bin"):
    read_state_dict(str(tmp_path / "w.npz"))
  with pytest.raises(ValueError, match="did you mean"):
    convert_state_dict("deit_tiny_patch16", {})


def test_cli_converts_batch_norm_statistics(tmp_path, capsys):
  from safetensors.torch import save_file
  from convert.timm_reference import perturbed
  reference = perturbed("resnet10t")
  state = reference.state_dict()
  save_file(state, str(tmp_path / "r.safetensors"))
  main(["--model", "resnet10t", "--checkpoint", str(tmp_path / "r.safetensors"), "--out", str(tmp_path / "out"),
        "--num-classes", "10", "--verify"])
  out = capsys.readouterr().out
  assert "converted resnet10t: 4.93M parameters" in out and "head re-initialised for 10 classes" in out
  assert float(out.split("vs timm = ")[1]) < 1e-4
  model, variables = load_converted(str(tmp_path / "out"))
  assert model.num_classes == 10 and not np.any(variables["params"]["head"]["fc"]["kernel"])
  np.testing.assert_array_equal(variables["batch_stats"]["layer2_0"]["downsample"]["bn"]["var"],
                                state["layer2.0.downsample.2.running_var"].numpy())
