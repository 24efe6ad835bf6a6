"""Image TFRecords: shard files, the record format, and the `tf.data` reader.

A shard is named `{split}-{index:05d}-n{count:05d}.tfrecord`, e.g. `train-00003-n00412.tfrecord`:
its record count is in its name. It is written under a hidden temporary name and renamed
only once complete, so a killed run never leaves a file that looks finished. Readers take
the shard list from the artifact's manifest, never from a directory listing.

Image record (one per image):
    image      bytes   JPEG, RGB, image_size x image_size
    height     int64   of the stored image (= image_size)
    width      int64   of the stored image (= image_size)
    source_id  bytes   the source file's path relative to --src (UTF-8)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import tensorflow as tf

from hvq_utils.manifest import file_sha256, read_manifest

SPLITS = ("train", "validation")
SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-n(?P<count>\d+)\.tfrecord$")
TEMP_SUFFIX = ".tfrecord.tmp"

IMAGE_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    "source_id": tf.io.FixedLenFeature([], tf.string),
}


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-n{count:05d}.tfrecord"


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def example_bytes(features: dict[str, bytes | list[int]]) -> bytes:
    """{name: bytes or list of ints} -> serialized tf.train.Example."""
    feats = {k: _bytes(v) if isinstance(v, bytes) else _ints(v) for k, v in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def image_example(jpeg: bytes, height: int, width: int, source_id: str) -> bytes:
    """One image record (see the module docstring), serialized."""
    return example_bytes(
        {"image": jpeg, "height": [height], "width": [width], "source_id": source_id.encode()}
    )


class ShardWriter:
    """Writes one split's serialized records into shards that appear only when complete.

    `write(record)` appends to the open shard (opened on first write); `full` says the shard
    reached `max_bytes` or `max_records`; `finish()` closes it, renames it to its final name
    with the count and returns {file, split, count, sha256}; the next write opens shard
    index + 1. As a context manager, a clean exit finishes the open shard and an exception
    deletes it (completed shards stay). `shards` lists the completed ones.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        split: str,
        max_bytes: float | None = None,
        max_records: int | None = None,
        first_index: int = 0,
    ) -> None:
        if max_bytes is None and max_records is None:
            raise ValueError("ShardWriter needs max_bytes or max_records to know where to cut shards")
        self.out_dir = Path(out_dir)
        self.split = split
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.index = first_index
        self.shards: list[dict] = []
        self._writer: tf.io.TFRecordWriter | None = None
        self._count = 0
        self._bytes = 0
        self.out_dir.mkdir(parents=True, exist_ok=True)

    @property
    def _temp(self) -> Path:
        return self.out_dir / f".{self.split}-{self.index:05d}{TEMP_SUFFIX}"

    def write(self, record: bytes) -> None:
        if self._writer is None:
            self._writer = tf.io.TFRecordWriter(str(self._temp))
        self._writer.write(record)
        self._count += 1
        self._bytes += len(record)

    @property
    def full(self) -> bool:
        return (self.max_bytes is not None and self._bytes >= self.max_bytes) or (
            self.max_records is not None and self._count >= self.max_records
        )

    def finish(self) -> dict | None:
        """Complete the open shard; returns its manifest entry, or None when nothing is open."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        name = shard_name(self.split, self.index, self._count)
        sha = file_sha256(self._temp)
        os.replace(self._temp, self.out_dir / name)
        entry = {"file": name, "split": self.split, "count": self._count, "sha256": sha}
        self.shards.append(entry)
        self.index += 1
        self._count = self._bytes = 0
        return entry

    def abort(self) -> None:
        """Drop the open shard (its temporary file), keeping the completed ones."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._temp.unlink(missing_ok=True)
            self._count = self._bytes = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()


def split_files(manifest: dict, split: str) -> list[str]:
    """Paths of a split's shards, in manifest order; a one-line error when there are none."""
    files = [
        str(Path(manifest["_path"]) / s["file"]) for s in manifest["shards"] if s["split"] == split
    ]
    if not files:
        have = sorted({s["split"] for s in manifest["shards"]})
        raise ValueError(
            f"split={split!r} has no shards in {manifest['_path']} (it has: {', '.join(have) or 'none'}); "
            "use one of those, or re-run the stage so that it writes this split"
        )
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(
                f"shard {f} named in the manifest is missing; re-run the stage that made it"
            )
    return files


def split_records(manifest: dict, split: str) -> int:
    """Number of records in a split's shards, from the manifest."""
    return sum(int(s["count"]) for s in manifest["shards"] if s["split"] == split)


def record_dataset(
    files: list[str], training: bool, shuffle_buffer: int, seed: int | None, records: int
) -> tf.data.Dataset:
    """Serialized records of `files`. Training: shuffled files, repeated, interleaved and
    shuffled records. Otherwise: one pass, in manifest order (shards in order, records in
    the order they were written), so evaluation and encoding are reproducible.

    records: how many the files hold (from the manifest). A one-pass dataset declares it as
    its cardinality: Keras' `evaluate` on a dataset of unknown length runs one step past the
    end and averages a zero into every custom metric.
    """
    if not training:
        return tf.data.TFRecordDataset(files).apply(tf.data.experimental.assert_cardinality(records))
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )
    return ds.shuffle(shuffle_buffer, seed=seed)


def image_dataset(
    data_dir: str | os.PathLike,
    split: str = "train",
    batch_size: int = 16,
    training: bool = False,
    flip: bool = False,
    seed: int | None = None,
    shuffle_buffer: int = 1024,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Prepared images as batches: float32 (B, S, S, 3) in [0, 1], S = the manifest's image_size.

    data_dir: output directory of `prepare` (its manifest lists the shards).
    training: shuffle, repeat forever and drop the last partial batch (static batch size);
        otherwise one pass in manifest order, the last batch may be smaller.
    flip: random horizontal flips, training only. seed: shuffle and flip seed, training only.
    with_ids: elements are (images, source_ids: string (B,)) instead of images.

    Pure TensorFlow ops (no py_function), so it runs on a TPU host; shapes are static.
    """
    manifest = read_manifest(data_dir, "prepare")
    size = int(manifest["image_size"])
    seed = seed if training else None

    def decode(serialized):
        ex = tf.io.parse_single_example(serialized, IMAGE_FEATURES)
        img = tf.io.decode_jpeg(ex["image"], channels=3)
        img = tf.ensure_shape(img, (size, size, 3))  # uint8 (S, S, 3)
        if training and flip:
            img = tf.image.random_flip_left_right(img, seed=seed)
        # Per image rather than per batch: a float batch at 512 pixels is 50 MB, and a fresh
        # buffer that size per conversion costs more than the conversion itself.
        img = tf.cast(img, tf.float32) * (1.0 / 255.0)  # float32 (S, S, 3) in [0, 1]
        return (img, ex["source_id"]) if with_ids else img

    files = split_files(manifest, split)
    ds = record_dataset(files, training, shuffle_buffer, seed, split_records(manifest, split))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def count(data_dir: str | os.PathLike, split: str = "train") -> int:
    """Number of images in a split of a `prepare` output directory (from its manifest)."""
    manifest = read_manifest(data_dir, "prepare")
    return int(manifest["splits"].get(split, 0))
