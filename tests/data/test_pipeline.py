import numpy as np
import pytest

from jaxvit.data import digits, pipeline

PP = "decode|random_resized_crop(8, scale=(0.5, 1))|flip_lr"


def take(ds, n):
  it = iter(pipeline.as_numpy(ds))
  return [next(it) for _ in range(n)]


def test_digits_split_is_fixed_and_stratified(data_dir):
  builder = pipeline.get_builder("digits", data_dir)
  assert pipeline.num_examples(builder, "train") == 1437 and pipeline.num_examples(builder, "test") == 360
  train, test = digits.stratified_split()
  assert len(set(train) & set(test)) == 0 and len(test) == 360
  labels = [int(b["label"]) for b in pipeline.as_numpy(builder.as_dataset(split="test"))]
  assert np.bincount(labels).tolist() == [36] * 10


@pytest.mark.parametrize("repeated_aug", [1, 3])
def test_resuming_mid_stream_gives_the_same_batches(data_dir, repeated_aug):
  builder = pipeline.get_builder("digits", data_dir)
  kw = dict(batch_size=32, seed=5, repeated_aug=repeated_aug)
  full = take(pipeline.train_dataset(builder, "train", PP, **kw), 50)
  resumed = take(pipeline.train_dataset(builder, "train", PP, start=32 * 46, **kw), 4)  # crosses epoch 1
  for a, b in zip(full[46:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_repeated_augmentation_shows_each_image_k_times_differently(data_dir):
  builder = pipeline.get_builder("digits", data_dir)
  batch = take(pipeline.train_dataset(builder, "train", PP, batch_size=30, seed=0, repeated_aug=3), 1)[0]
  labels = batch["label"].reshape(10, 3)
  assert np.all(labels == labels[:, :1])
  assert not np.array_equal(batch["image"][0], batch["image"][1])


def test_processes_read_disjoint_slices(data_dir):
  builder = pipeline.get_builder("digits", data_dir)
  seen = []
  for index in range(2):
    ds, steps = pipeline.eval_dataset(builder, "test", "decode", batch_size=64, process_index=index, process_count=2)
    batches = list(pipeline.as_numpy(ds))
    assert len(batches) == steps == 3
    seen.append(np.concatenate([b["image"][b["mask"] == 1].reshape(-1, 192) for b in batches]))
  assert sum(len(s) for s in seen) == 360
  rows = {r.tobytes() for r in np.concatenate(seen)}
  assert len(rows) > 340  # digits has a few exact duplicates; otherwise every image once


def test_unknown_split_and_dataset(data_dir):
  builder = pipeline.get_builder("digits", data_dir)
  with pytest.raises(ValueError, match="split 'validation' is not in digits; accepted: \\['test', 'train'\\]"):
    pipeline.train_dataset(builder, "validation", PP, batch_size=8, seed=0)
  # ImageNet needs a manual download: the error says where to put it (no network is tried)
  with pytest.raises(ValueError, match="config.data.name='imagenet2012' is not prepared in config.data.data_dir"):
    pipeline.get_builder("imagenet2012", data_dir)


def test_two_processes_read_what_one_process_with_two_shards_reads(data_dir):
  builder = pipeline.get_builder("digits", data_dir)
  kw = dict(batch_size=32, seed=1, num_shards=2, start=64)
  single = take(pipeline.train_dataset(builder, "train", PP, **kw), 3)
  halves = [take(pipeline.train_dataset(builder, "train", PP, **dict(kw, batch_size=16, start=32), process_index=i,
                                        process_count=2), 3) for i in range(2)]
  for step in range(3):
    np.testing.assert_array_equal(single[step]["image"],
                                  np.concatenate([halves[0][step]["image"], halves[1][step]["image"]]))
