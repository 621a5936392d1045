"""The jaxvit CLI: train and evaluate a model from an ml_collections config.

  python -m jaxvit.main --config=configs/default.py --workdir=runs/default [--config.total_steps=500]
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxvit.cpu import use_all_cores
from jaxvit.train import distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file, `path.py[:arg]`", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and summary.json go here")
flags.DEFINE_bool("eval_only", False, "evaluate the newest checkpoint in --workdir instead of training")
distributed.define_flags(flags)


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step at INFO
  use_all_cores()  # one CPU device per core (jaxvit/cpu.py); before JAX starts
  from jaxvit.train.trainer import evaluate_checkpoint, train_and_evaluate
  try:
    distributed.initialize_from_flags(FLAGS)
    (evaluate_checkpoint if FLAGS.eval_only else train_and_evaluate)(FLAGS.config, FLAGS.workdir)
  except (ValueError, FloatingPointError) as err:
    sys.exit(f"error: {err}")


def run():
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  run()
