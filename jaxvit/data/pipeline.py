"""tf.data input pipelines: each process reads its own slices (shards) of a TFDS split.

Training streams are a pure function of (seed, example position): epoch `e` of a shard is the
shard shuffled with seed `(seed, e)`, and every example's augmentation draws from a stateless seed
of (seed, position, shard). Resuming at position `k` starts at epoch `k // n` and skips `k % n`
records before decoding, so a resumed run sees exactly the batches an uninterrupted one would.
Evaluation covers every example exactly once: the last batch is padded and `mask` marks real ones.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxvit.data import preprocess

FOLDER_PREFIX = "folder:"


def get_builder(name: str, data_dir: str | None = None, prepare: bool = True):
  """The TFDS builder for `name`: a registered TFDS dataset, `digits`, or `folder:/path/to/images`.

  A folder holds `<split>/<class>/<image>` files (tfds' ImageFolder). With `prepare`, prepares the
  dataset if it can be prepared offline; otherwise one error names `config.data` fields to fix.
  """
  if name.startswith(FOLDER_PREFIX):
    root = name[len(FOLDER_PREFIX):]
    if not tf.io.gfile.isdir(root):
      raise ValueError(f"config.data.name={name!r}: {root!r} is not a folder of <split>/<class>/<image> files")
    return tfds.ImageFolder(root)
  if name == "digits":
    from jaxvit.data import digits  # noqa: F401  (registers the builder)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"config.data.name={name!r} is not a TFDS dataset; accepted: 'digits', "
                     f"'{FOLDER_PREFIX}/path', or a name from tfds.list_builders()") from None
  if not builder.is_prepared() and prepare:
    try:
      builder.download_and_prepare()
    except Exception as err:  # noqa: BLE001  (tfds raises many kinds; all mean "not available here")
      raise ValueError(f"config.data.name={name!r} is not prepared in config.data.data_dir={data_dir!r} and "
                       f"could not be prepared here ({type(err).__name__}: {str(err)[:300]}). Prepare it "
                       f"with tfds (or download it by hand) and point config.data.data_dir at it.") from None
  return builder


def num_examples(builder, split: str) -> int:
  """Examples in `split` from the dataset's metadata; counted by reading when it has none (mock data)."""
  if builder.info.splits:
    return builder.info.splits[split].num_examples
  ds = builder.as_dataset(split=split)
  count = int(ds.cardinality())
  return count if count >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def host_split(builder, split: str, process_index: int, process_count: int, drop_remainder: bool) -> str:
  """This process's slice of `split` (tfds.even_splits), checked to exist."""
  if builder.info.splits and split not in builder.info.splits:
    raise ValueError(f"split {split!r} is not in {builder.name}; accepted: {sorted(builder.info.splits)}")
  return tfds.even_splits(split, process_count, drop_remainder=drop_remainder)[process_index]


def _records(builder, split: str, shard: int, num_shards: int, drop_remainder: bool):
  """`(dataset, size)` of one shard of `split`: a tfds sub-split, or for ImageFolder (which has none)
  every `num_shards`-th example."""
  if isinstance(builder, tfds.ImageFolder):
    if split not in builder.info.splits:
      raise ValueError(f"split {split!r} is not in the folder; accepted: {sorted(builder.info.splits)}")
    n = num_examples(builder, split)
    size = n // num_shards + (0 if drop_remainder or shard >= n % num_shards else 1)
    ds = builder.as_dataset(split=split, shuffle_files=False).shard(num_shards, shard).take(size)
  else:
    sub = host_split(builder, split, shard, num_shards, drop_remainder)
    ds, size = builder.as_dataset(split=sub, shuffle_files=False), num_examples(builder, sub)
  return ds.map(lambda f: {"image": f["image"], "label": f["label"]}), size


def _shard_stream(builder, split, pp, *, shard, num_shards, batch_size, seed, start, shuffle_buffer,
                  repeated_aug, pp_defaults):
  """Batches of one data shard (a `tfds.even_splits` slice), from shard position `start` on."""
  records, n = _records(builder, split, shard, num_shards, drop_remainder=True)
  if n < batch_size:
    raise ValueError(f"{builder.name}:{split} shard {shard}/{num_shards} has {n} examples, fewer than its "
                     f"per-shard batch {batch_size}")

  def epoch(e):
    ds = records.shuffle(min(n, shuffle_buffer), seed=seed * 1_000_003 + e, reshuffle_each_iteration=False)
    if repeated_aug > 1:
      ds = ds.flat_map(lambda f: tf.data.Dataset.from_tensors(f).repeat(repeated_aug)).take(n)
    return ds

  ds = tf.data.Dataset.range(start // n, 2 ** 62).flat_map(epoch).skip(start % n)
  positions = tf.data.Dataset.range(start, 2 ** 62)
  apply = preprocess.parse(pp, pp_defaults)
  ds = tf.data.Dataset.zip(ds, positions).map(
      lambda f, p: apply(f, tf.stack([tf.constant(seed, tf.int64), p * num_shards + shard])),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(batch_size, drop_remainder=True)


def train_dataset(builder, split: str, pp: str, *, batch_size: int, seed: int, start: int = 0,
                  shuffle_buffer: int = 50_000, repeated_aug: int = 1, num_shards: int | None = None,
                  process_index: int = 0, process_count: int = 1, pp_defaults: dict | None = None):
  """Infinite batches `{"image", "label"}` of this process, from its example position `start` on.

  The split is cut into `num_shards` (default: one per process) and each process reads only its own
  shards, so the global batches depend on `num_shards` alone: a 2-process run and a 1-process run
  with `num_shards=2` see the same data. `repeated_aug = k` (Hoffer et al. 2020; DeiT's RASampler
  uses 3) shows each drawn image k times in a row, each with its own augmentation, keeping the epoch
  at n examples; unlike DeiT's sampler, the repeats stay in one shard.
  """
  num_shards = num_shards or process_count
  if num_shards % process_count or batch_size % (num_shards // process_count):
    raise ValueError(f"config.data.num_shards={num_shards} must be a multiple of the {process_count} processes "
                     f"and split the per-process batch {batch_size} evenly")
  per_process = num_shards // process_count
  shards = [_shard_stream(builder, split, pp, shard=process_index * per_process + i, num_shards=num_shards,
                          batch_size=batch_size // per_process, seed=seed, start=start // per_process,
                          shuffle_buffer=shuffle_buffer, repeated_aug=repeated_aug, pp_defaults=pp_defaults)
            for i in range(per_process)]
  if per_process == 1:
    return shards[0].prefetch(2)
  merge = lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]}
  return tf.data.Dataset.zip(tuple(shards)).map(merge).prefetch(2)


def eval_dataset(builder, split: str, pp: str, *, batch_size: int, process_index: int = 0, process_count: int = 1,
                 pp_defaults: dict | None = None):
  """Batches `{"image", "label", "mask"}` covering this process's slice once; every process yields
  the same number of batches (padding examples have `mask == 0`)."""
  total = num_examples(builder, split)
  steps = math.ceil(math.ceil(total / process_count) / batch_size)
  records, _ = _records(builder, split, process_index, process_count, drop_remainder=False)
  apply = preprocess.parse(pp, pp_defaults)
  ds = records.map(lambda f: {**apply(f, tf.constant([0, 0], tf.int64)), "mask": 1.0},
                                  num_parallel_calls=tf.data.AUTOTUNE)
  pad = ds.take(1).map(lambda f: {k: tf.zeros_like(v) for k, v in f.items()}).repeat()
  return ds.concatenate(pad).batch(batch_size).take(steps).prefetch(2), steps


def undecodable_files(name: str, limit: int = 5) -> list[str]:
  """Image files of a `folder:` dataset that TensorFlow cannot decode (the slow path after an error)."""
  if not name.startswith(FOLDER_PREFIX):
    return []
  bad = []
  for path in sorted(tf.io.gfile.glob(f"{name[len(FOLDER_PREFIX):]}/*/*/*")):
    try:
      tf.io.decode_image(tf.io.read_file(path))
    except tf.errors.InvalidArgumentError:
      bad.append(path)
      if len(bad) == limit:
        break
  return bad


def as_numpy(ds):
  return tfds.as_numpy(ds)


def to_global(batch: dict, sharding) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded on the batch axis."""
  import jax
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
