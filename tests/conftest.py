"""Every test run sees 8 CPU devices, so sharding is exercised everywhere (DESIGN.md, Tests). Tests are mostly
compile-bound, so they compile at LLVM optimisation level 1 (of 3; the compute-bound ones, digits training runs,
measure the same steps/s) and share XLA's persistent compilation cache across the session's workers and the
processes they start (`JAX_COMPILATION_CACHE_DIR`, a fresh directory unless set): together they halve the time
of `tests/train/test_trainer.py` on 2 cores."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                           + ("" if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", "")
                              else " --xla_backend_optimization_level=1")).strip()
OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # the xdist workers inherit the controller's directory
if OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxvit-tests-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import importlib.util  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

HAS_TIMM = importlib.util.find_spec("timm") is not None
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `configs` imports as it does for `python -m jaxvit.main` run from the repository


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One prepared copy of `digits` for the whole session."""
  path = str(tmp_path_factory.mktemp("tfds"))
  from jaxvit.data import pipeline
  pipeline.get_builder("digits", path)
  return path


@pytest.fixture
def tiny_config(data_dir):
  """A seconds-long digits run on a 1-block ViT."""
  from configs import common
  c = common.base_config()
  c.model.name = "vit_tiny_patch16_224"
  c.model.overrides = dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, drop_path_rate=0.1)
  c.data.update(name="digits", data_dir=data_dir, pp_train="decode|random_resized_crop(8, scale=(0.5, 1))|flip_lr",
                pp_eval="decode", shuffle_buffer=2000)
  c.batch_size, c.eval_batch_size = 32, 64
  c.total_steps = 8
  c.log_every, c.eval_every, c.checkpoint_every = 2, 4, 4
  c.optimizer.update(lr=3e-3, warmup_steps=2)
  return c


def pytest_configure(config):
  config.addinivalue_line("markers", "parity: compares with timm (PyTorch); needs the [parity] extra")
  config.addinivalue_line("markers", "parity_all: parity for every registered variant (maintainer run)")
  config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_unconfigure(config):
  if OWN_CACHE and not hasattr(config, "workerinput"):  # the controller (or a run without xdist) made it
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """`parity_all` runs only when selected with `-m parity_all`; timm tests need timm installed."""
  selected = config.getoption("-m") or ""
  skip_all = pytest.mark.skip(reason="run with -m parity_all")
  skip_timm = pytest.mark.skip(reason="needs timm: pip install -e .[parity]")
  for item in items:
    if "parity_all" in item.keywords and "parity_all" not in selected:
      item.add_marker(skip_all)
    elif "parity" in item.keywords and not HAS_TIMM:
      item.add_marker(skip_timm)
