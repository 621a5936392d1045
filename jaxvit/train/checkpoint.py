"""Orbax checkpoints of the train state plus the data position, with fallback past a bad latest one."""

import logging
import os
import time

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """`workdir/checkpoints/<step>/{state, meta}`: keeps the newest `keep`, saves asynchronously."""

  def __init__(self, workdir: str, keep: int = 3):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
    self.manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options,
                                         item_names=("state", "meta"))

  def save(self, step: int, state, meta: dict):
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)

  def restore_latest(self, state, shardings):
    """`(state, meta)` from the newest readable checkpoint, or `(state, None)` when there is none.

    A checkpoint that fails to restore (corrupt or partial files) is reported, moved aside to
    `<step>.unreadable.<time>` (so training can save that step again) and the previous one is tried.
    """
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta
      except Exception as err:  # noqa: BLE001  (any failure means this checkpoint is unusable)
        logging.warning("checkpoint %d in %s cannot be restored (%s: %s); trying the previous one",
                        step, self.manager.directory, type(err).__name__, str(err)[:200])
        aside = f"{step}.unreadable.{int(time.time())}"
        print(f"warning: checkpoint {step} is unreadable ({type(err).__name__}); moved to {aside}, "
              f"trying the previous one")
        if jax.process_index() == 0:
          os.replace(os.path.join(str(self.manager.directory), str(step)),
                     os.path.join(str(self.manager.directory), aside))
        self.manager.reload()
    return state, None

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
