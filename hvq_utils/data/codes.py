"""Code TFRecords (stage 03's output, the priors' input): writer and `tf.data` reader.

One record per image:
    {level}        bytes   int16 little-endian, row-major (H, W), for each level written
    {level}_shape  int64   [H, W]
    source_id      bytes   the image's source id from the image records (UTF-8)

Shards follow the image shards' scheme (count in the name, temporary name until complete;
see hvq_utils.data.records). The codes manifest (stage "encode") lists them as `shards`
[{file, split, count, ...}] and the grid sides as `grid_sizes` {top: 16, middle: 32, bottom: 64}.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from hvq_utils.config import LEVELS
from hvq_utils.data.records import (
    ShardWriter,
    example_bytes,
    record_dataset,
    split_files,
    split_records,
)
from hvq_utils.manifest import read_manifest

# int16 holds every code of a codebook up to 32768 entries, at half the bytes of int32.
_MAX_CODE = np.iinfo(np.int16).max


class CodeShardWriter:
    """Writes code records of one split into shards of `records_per_shard` records.

        with CodeShardWriter(out, "train") as w:
            w.add_batch({"top": top, "middle": mid, "bottom": bot}, ids)  # int (B, H, W) each
        manifest_shards = w.shards                     # [{file, split, count, sha256}]

    A clean exit of the `with` block completes the last shard; an exception drops it
    (completed shards stay, under their final names).
    """

    def __init__(self, out_dir: str | os.PathLike, split: str, records_per_shard: int = 4096) -> None:
        if records_per_shard < 1:
            raise ValueError(f"records_per_shard={records_per_shard} must be 1 or more")
        self._writer = ShardWriter(out_dir, split, max_records=records_per_shard)
        self._levels: tuple[str, ...] | None = None

    @property
    def shards(self) -> list[dict]:
        return list(self._writer.shards)

    def add(self, codes: dict[str, np.ndarray], source_id: str) -> None:
        """codes: {level: int array (H, W)} with values in 0..32767; source_id: the image's id."""
        levels = tuple(codes)
        if self._levels is None:
            self._levels = levels
        elif levels != self._levels:
            raise ValueError(
                f"codes for {source_id!r} have levels {levels}, earlier records {self._levels}; "
                "give the same levels in every record"
            )
        features: dict[str, bytes | list[int]] = {"source_id": source_id.encode()}
        for level, array in codes.items():
            a = np.asarray(array)
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(
                    f"codes[{level!r}] for {source_id!r} is {a.dtype} {a.shape}; give an int array (H, W)"
                )
            if a.size and (a.min() < 0 or a.max() > _MAX_CODE):
                raise ValueError(
                    f"codes[{level!r}] for {source_id!r} holds values {a.min()}..{a.max()}; "
                    f"codes must lie in 0..{_MAX_CODE}"
                )
            features[level] = a.astype("<i2").tobytes()
            features[f"{level}_shape"] = list(a.shape)
        self._writer.write(example_bytes(features))
        if self._writer.full:
            self._writer.finish()

    def add_batch(self, codes: dict[str, np.ndarray], source_ids: Sequence[str]) -> None:
        """codes: {level: int array (B, H, W)}; source_ids: B ids."""
        arrays = {level: np.asarray(a) for level, a in codes.items()}
        for level, a in arrays.items():
            if a.ndim != 3 or len(a) != len(source_ids):
                raise ValueError(
                    f"codes[{level!r}] has shape {a.shape} for {len(source_ids)} source ids; "
                    "give (B, H, W) with B = len(source_ids)"
                )
        for i, source_id in enumerate(source_ids):
            self.add({level: a[i] for level, a in arrays.items()}, source_id)

    def close(self) -> None:
        """Complete the last shard."""
        self._writer.finish()

    def __enter__(self) -> CodeShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.__exit__(exc_type, exc, tb)


def code_dataset(
    codes_dir: str | os.PathLike,
    split: str = "train",
    batch_size: int = 32,
    training: bool = False,
    levels: Sequence[str] = LEVELS,
    seed: int | None = None,
    shuffle_buffer: int = 4096,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Codes as batches: {level: int32 (B, G, G)} for each of `levels`, G from the manifest's
    grid_sizes (16 / 32 / 64 at the full preset).

    codes_dir: output directory of `encode`. training: shuffle (with `seed`), repeat
    forever, drop the last partial batch; otherwise one pass in manifest order.
    with_ids: elements are (codes, source_ids: string (B,)).
    Pure TensorFlow ops, static shapes.
    """
    manifest = read_manifest(codes_dir, "encode")
    grid_sizes = manifest["grid_sizes"]
    unknown = [lv for lv in levels if lv not in grid_sizes]
    if unknown:
        raise ValueError(
            f"levels {unknown} are not in {codes_dir} (it has {', '.join(grid_sizes)}); "
            f"use some of {', '.join(grid_sizes)}"
        )
    features = {"source_id": tf.io.FixedLenFeature([], tf.string)}
    for level in levels:
        features[level] = tf.io.FixedLenFeature([], tf.string)
        features[f"{level}_shape"] = tf.io.FixedLenFeature([2], tf.int64)

    def decode(serialized):
        ex = tf.io.parse_single_example(serialized, features)
        codes = {}
        for level in levels:
            g = int(grid_sizes[level])
            flat = tf.io.decode_raw(ex[level], tf.int16, little_endian=True)
            # ensure_shape fails the pipeline if a record's grid differs from the manifest's.
            grid = tf.ensure_shape(tf.reshape(flat, ex[f"{level}_shape"]), (g, g))
            codes[level] = tf.cast(grid, tf.int32)  # (G, G)
        return (codes, ex["source_id"]) if with_ids else codes

    seed = seed if training else None
    files = split_files(manifest, split)
    ds = record_dataset(files, training, shuffle_buffer, seed, split_records(manifest, split))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
