"""The tf.data readers: image records and code records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hvq_utils import get_preset
from hvq_utils.data import CodeShardWriter, code_dataset, image_dataset
from hvq_utils.data.records import count
from hvq_utils.manifest import write_manifest
from hvq_utils.prepare import prepare_images

N_IMAGES = 22
GRIDS = {"top": 4, "middle": 8, "bottom": 16}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """N_IMAGES images, dark on the left and bright on the right, prepared at the smoke preset."""
    src = tmp_path_factory.mktemp("src")
    ramp = np.tile(np.linspace(0, 255, 40, dtype=np.uint8)[None, :, None], (40, 1, 3))
    for i in range(N_IMAGES):
        Image.fromarray(ramp).save(src / f"img_{i:02d}.png")
    out = tmp_path_factory.mktemp("prepared")
    prepare_images(src, out, get_preset("smoke", shard_mb=0.005), workers=1)
    return out


def graph_ops(ds: tf.data.Dataset) -> set[str]:
    """Every op in a dataset's graph, including those inside its map functions."""
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    ops = {node.op for node in graph.node}
    for fn in graph.library.function:
        ops |= {node.op for node in fn.node_def}
    return ops


def test_reader_graph_has_no_pyfunc(prepared, tmp_path):
    write_codes(tmp_path, n=3)
    for ds in (
        image_dataset(prepared, training=True, flip=True),
        image_dataset(prepared, split="validation", with_ids=True),
        code_dataset(tmp_path, training=True),
    ):
        ops = graph_ops(ds)
        assert "ParseExampleV2" in ops or "ParseSingleExample" in ops
        assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    # The check itself sees a py_function when there is one.
    with_py = tf.data.Dataset.range(3).map(lambda x: tf.py_function(lambda v: v, [x], tf.int64))
    assert "EagerPyFunc" in graph_ops(with_py)


def test_training_batches_are_static_float_in_unit_range(prepared):
    ds = image_dataset(prepared, batch_size=4, training=True)
    assert ds.element_spec.shape == (4, 32, 32, 3) and ds.element_spec.dtype == tf.float32
    for batch in ds.take(8):  # more than one epoch: training repeats
        assert batch.shape == (4, 32, 32, 3)
        assert 0.0 <= float(tf.reduce_min(batch)) and float(tf.reduce_max(batch)) <= 1.0


def test_evaluation_is_one_pass_and_keeps_the_last_partial_batch(prepared):
    n = count(prepared, "train")
    assert n + count(prepared, "validation") == N_IMAGES
    ds = image_dataset(prepared, batch_size=4)
    assert ds.element_spec.shape.as_list() == [None, 32, 32, 3]
    sizes = [int(b.shape[0]) for b in ds]
    assert sum(sizes) == n and all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4
    # Keras' evaluate runs exactly this many steps; with an unknown length it ran one more.
    assert int(ds.cardinality()) == len(sizes)


def test_code_evaluation_declares_its_length(tmp_path):
    write_codes(tmp_path, n=10, per_shard=3)
    ds = code_dataset(tmp_path, batch_size=4)
    assert int(ds.cardinality()) == 3 == len(list(ds))


def test_evaluation_order_follows_the_manifest(prepared):
    ds = image_dataset(prepared, batch_size=5, with_ids=True)
    ids = [s.decode() for _, batch in ds for s in batch.numpy()]
    assert ids == sorted(ids) and len(ids) == count(prepared, "train")


def flipped_fraction(ds: tf.data.Dataset, batches: int) -> float:
    images = np.concatenate([b.numpy() for b in ds.take(batches)])
    flipped = images[:, 16, 2, 0] > images[:, 16, -3, 0]  # bright on the left
    return float(flipped.mean())


def test_flips_happen_only_when_asked(prepared):
    assert 0.25 < flipped_fraction(image_dataset(prepared, batch_size=8, training=True, flip=True), 8) < 0.75
    assert flipped_fraction(image_dataset(prepared, batch_size=8, training=True, flip=False), 4) == 0.0
    assert flipped_fraction(image_dataset(prepared, batch_size=8, training=False, flip=True), 1) == 0.0


def test_a_missing_split_names_what_there_is(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (40, 40)).save(src / "a.png")
    prepare_images(src, tmp_path / "out", get_preset("smoke", val_fraction=0.0), workers=1)
    with pytest.raises(ValueError, match=r"split='validation' has no shards .* \(it has: train\)"):
        image_dataset(tmp_path / "out", split="validation")


def random_codes(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = {"top": 512, "middle": 256, "bottom": 64}
    return {lv: rng.integers(0, sizes[lv], (n, g, g)) for lv, g in GRIDS.items()}


def write_codes(out: Path, n: int, per_shard: int = 4) -> tuple[dict[str, np.ndarray], list[str]]:
    codes, ids = random_codes(n), [f"train/img_{i:02d}.jpg" for i in range(n)]
    with CodeShardWriter(out, "train", records_per_shard=per_shard) as w:
        w.add_batch({lv: a[: n // 2] for lv, a in codes.items()}, ids[: n // 2])
        for i in range(n // 2, n):
            w.add({lv: a[i] for lv, a in codes.items()}, ids[i])
    write_manifest(out, "encode", get_preset("smoke"), shards=w.shards, grid_sizes=GRIDS)
    return codes, ids


def test_code_records_round_trip(tmp_path):
    codes, ids = write_codes(tmp_path, n=10)
    assert sorted(p.name for p in tmp_path.glob("*.tfrecord")) == [
        "train-00000-n00004.tfrecord", "train-00001-n00004.tfrecord", "train-00002-n00002.tfrecord"
    ]
    ds = code_dataset(tmp_path, batch_size=3, with_ids=True)
    assert {lv: s.shape.as_list() for lv, s in ds.element_spec[0].items()} == {
        lv: [None, g, g] for lv, g in GRIDS.items()
    }
    got = {lv: [] for lv in GRIDS}
    got_ids = []
    for batch, batch_ids in ds:
        for lv in GRIDS:
            assert batch[lv].dtype == tf.int32
            got[lv].append(batch[lv].numpy())
        got_ids += [s.decode() for s in batch_ids.numpy()]
    assert got_ids == ids
    for lv in GRIDS:
        np.testing.assert_array_equal(np.concatenate(got[lv]), codes[lv])


def test_code_training_batches_are_static_and_levels_selectable(tmp_path):
    write_codes(tmp_path, n=10)
    ds = code_dataset(tmp_path, batch_size=4, training=True, levels=("top", "middle"))
    assert set(ds.element_spec) == {"top", "middle"}
    assert ds.element_spec["middle"].shape == (4, 8, 8)
    for batch in ds.take(5):
        assert batch["top"].shape == (4, 4, 4)
    with pytest.raises(ValueError, match="levels \\['left'\\] are not in"):
        code_dataset(tmp_path, levels=("left",))


def test_code_writer_drops_an_unfinished_shard_on_error(tmp_path):
    codes = random_codes(6)
    with pytest.raises(RuntimeError), CodeShardWriter(tmp_path, "train", records_per_shard=4) as w:
        w.add_batch(codes, [str(i) for i in range(6)])
        raise RuntimeError("encoder crashed")
    assert [p.name for p in tmp_path.iterdir()] == ["train-00000-n00004.tfrecord"]
    assert w.shards == [{**w.shards[0], "file": "train-00000-n00004.tfrecord", "count": 4}]


def test_code_writer_refuses_bad_codes(tmp_path):
    with CodeShardWriter(tmp_path, "train") as w:
        with pytest.raises(ValueError, match="codes must lie in 0..32767"):
            w.add({"top": np.full((4, 4), -1)}, "a")
        with pytest.raises(ValueError, match="give an int array"):
            w.add({"top": np.zeros((4, 4), np.float32)}, "a")
        with pytest.raises(ValueError, match="B = len\\(source_ids\\)"):
            w.add_batch({"top": np.zeros((2, 4, 4), np.int32)}, ["a"])
