"""The train state and its sharded creation from logical axis names."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed whole (DESIGN.md, Training system)."""
  step: jax.Array
  params: Any
  opt_state: Any
  mutable: Any  # non-param collections (BatchNorm's batch_stats), {} for ViTs
  ema_params: Any  # exponential moving average of params, or None
  rng: jax.Array  # raw uint32 base key (checkpointable); each step folds in the step number
  loss_params: Any = None  # the objective's own parameters (jaxvit.distill.learned), not the model's
  loss_opt_state: Any = None

  def variables(self, ema: bool = False):
    return {"params": self.ema_params if ema else self.params, **self.mutable}


def initial_rng(seed: int) -> jax.Array:
  """The state's base key for `config.seed` (init uses another fold of the same seed)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 2)


def abstract_state(model, tx, image_shape, seed: int, ema: bool, init_loss_params=None):
  """The boxed (logically partitioned) state as shapes, without allocating anything.
  `init_loss_params(rng)` makes the loss's own parameters (optimised by `tx` as well)."""
  def init():
    rng = jax.random.PRNGKey(seed)
    variables = model.init({"params": jax.random.fold_in(rng, 1)}, jnp.zeros((1,) + tuple(image_shape)), train=False)
    params = variables["params"]
    mutable = {k: v for k, v in variables.items() if k != "params"}
    loss_params = init_loss_params(jax.random.fold_in(rng, 3)) if init_loss_params else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), mutable=mutable,
                      ema_params=params if ema else None, rng=initial_rng(seed), loss_params=loss_params,
                      loss_opt_state=tx.init(loss_params) if loss_params is not None else None)
  return init, jax.eval_shape(init)


def state_shardings(abstract, mesh, rules):
  """NamedShardings for every leaf of the state from the parameters' logical axis names."""
  specs = nn.get_partition_spec(abstract)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def create_state(model, tx, image_shape, seed: int, mesh, rules, ema: bool = False, init_loss_params=None):
  """Initialises the state directly into its shardings (no host copy of the full model)."""
  init, abstract = abstract_state(model, tx, image_shape, seed, ema, init_loss_params)
  shardings = state_shardings(abstract, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = jax.jit(lambda: nn.meta.unbox(init()), out_shardings=shardings)()
  return state, shardings
