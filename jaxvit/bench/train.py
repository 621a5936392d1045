"""Training-step speed: jaxvit's real train step (forward + backward + AdamW) against timm's."""

import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvit.bench import flops, measure
from jaxvit.registry import create_model
from jaxvit.train import mesh as mesh_lib, state as state_lib, step as step_lib
from jaxvit.utils import input_shape


def jaxvit_train_step(name: str, batch: int, img_size, dtype: str = "float32"):
  """`(run, hlo_text, macs_per_image)`: each `run()` is one `jaxvit.train` step (forward + backward +
  AdamW) on a batch sharded over all local devices, compiled ahead of time."""
  model = create_model(name, dtype=jnp.dtype(dtype), **({} if img_size is None else dict(img_size=img_size)))
  shape = input_shape(model, batch)
  mesh = mesh_lib.make_mesh({"data": -1})
  rules = mesh_lib.DEFAULT_RULES
  tx = optax.adamw(1e-3, weight_decay=0.05)
  state, shardings = state_lib.create_state(model, tx, shape[1:], 0, mesh, rules)
  rng = np.random.RandomState(0)
  data = {"image": rng.standard_normal(shape).astype(np.float32), "label": rng.randint(0, 1000, batch)}
  data = jax.device_put(data, mesh_lib.batch_sharding(mesh))
  step = step_lib.make_train_step(model, tx, step_lib.classification_loss(), optax.constant_schedule(1e-3))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step = jax.jit(step, in_shardings=(shardings, mesh_lib.batch_sharding(mesh)), donate_argnums=0)
    compiled = step.lower(state, data).compile()
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], data)
    jax.block_until_ready(metrics["loss"])

  macs = flops.count_macs(model, jax.eval_shape(lambda: holder[0].variables()),
                          jax.ShapeDtypeStruct((1,) + shape[1:], jnp.float32))["total"]
  return run, compiled.as_text(), macs


def timm_steps_per_second(name: str, batch: int, img_size: int, runs: int) -> float:
  """Steps/s of timm's model in train mode with torch.optim.AdamW on the same shapes (float32)."""
  import timm
  import torch

  from jaxvit.convert import timm_kwargs
  model = timm.create_model(name, pretrained=False, **timm_kwargs(name, img_size=img_size)).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
  x, y = torch.randn(batch, 3, img_size, img_size), torch.randint(0, 1000, (batch,))

  def run():
    opt.zero_grad(set_to_none=True)
    out = model(x)
    loss = torch.nn.functional.cross_entropy(out if torch.is_tensor(out) else out[0], y)
    loss.backward()
    opt.step()

  return 1 / statistics.median(measure.time_runs(run, runs=runs, warmup=2))
