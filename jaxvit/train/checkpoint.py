"""Orbax checkpoints of the train state plus the data position, with fallback past a bad latest one."""

import logging
import os
import time

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """`workdir/checkpoints/<step>/{state, meta}`: keeps the newest `keep`, saves in the background."""

  def __init__(self, workdir: str, keep: int = 3, asynchronous: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous)
    self.manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options,
                                         item_names=("state", "meta"))

  def save(self, step: int, state, meta: dict):
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)

  def restore_latest(self, state, shardings):
    """`(state, meta)` from the newest readable checkpoint, or `(state, None)` when there is none.

    A checkpoint that fails to restore (corrupt or partial files) is reported and the previous one
    is tried; once an older one restores, the unreadable newer ones are moved aside to
    `<step>.unreadable.<time>` so training can save those steps again. When none restores (a
    different model or optimizer wrote them), nothing is moved and the error says so.
    """
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    failed = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      meta=ocp.args.JsonRestore()))
      except Exception as err:  # noqa: BLE001  (any failure means this checkpoint is unusable)
        failed.append((step, f"{type(err).__name__}: {str(err)[:300]}"))
        logging.warning("checkpoint %d in %s cannot be restored (%s)", step, self.manager.directory, failed[-1][1])
        continue
      for bad, why in failed:
        aside = f"{bad}.unreadable.{int(time.time())}"
        print(f"warning: checkpoint {bad} is unreadable ({why.split(':')[0]}); moved to {aside}, "
              f"resuming from checkpoint {step}")
        if jax.process_index() == 0:
          os.replace(os.path.join(str(self.manager.directory), str(bad)),
                     os.path.join(str(self.manager.directory), aside))
      if failed:
        self.manager.reload()
      return restored.state, restored.meta
    if failed:
      raise ValueError(f"no checkpoint in {self.manager.directory} fits this config (model, optimizer and "
                       f"EMA settings must match the run that wrote them); newest error: {failed[0][1]}. "
                       f"Use another --workdir, or the config they were written with.")
    return state, None

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
