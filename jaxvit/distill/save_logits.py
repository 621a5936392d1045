"""Precompute a teacher's sparse logits for a student config (TinyViT style), once.

  python -m jaxvit.distill.save_logits --config=configs/distill_digits.py:kind=kd --out=runs/teacher_logits --topk=5
  python -m jaxvit.main --config=configs/distill_digits.py:kind=kd \\
      --config.distill.teacher.logits=runs/teacher_logits --workdir=runs/kd_saved

The student config decides everything the teacher must see (data, augmentation, Mixup, seed, batch,
steps); `config.distill.teacher` names the teacher. Training with `config.distill.teacher.logits`
then needs no teacher forward pass; a config that would see other images is an error. Several
processes (`launch/local.sh` with `JAXVIT_MODULE=jaxvit.distill.save_logits`, or a pod) each write
their own rows; training then runs with the same number of processes, since each reads its own
share of the data.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxvit.train import distributed

config_flags.DEFINE_config_file("config", None, "the student's config file", lock_config=False)
flags.DEFINE_string("out", None, "the directory to write")
flags.DEFINE_integer("topk", 10, "probabilities kept per image (TinyViT: 100 of 1000 ImageNet classes)")
flags.mark_flags_as_required(["config", "out"])
distributed.define_flags(flags)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from jaxvit import cpu
  cpu.use_all_cores()
  from jaxvit.distill import sparse_logits
  try:
    distributed.initialize_from_flags(FLAGS)
    meta = sparse_logits.save(FLAGS.config, FLAGS.out, FLAGS.topk)
  except ValueError as err:
    sys.exit(f"error: {err}")
  print(f"save_logits: {meta['steps']} steps x top-{meta['topk']} of {meta['num_classes']} classes, "
        f"{meta['process_count']} process(es) -> {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
