"""Reading a run's TensorBoard event files back (what the trainer's clu writer wrote)."""


def scalars(workdir, tag):
  """The values of `tag`, in step order."""
  import tensorflow as tf
  values = {}
  for path in tf.io.gfile.glob(f"{workdir}/events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return [values[k] for k in sorted(values)]
