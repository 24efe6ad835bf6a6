import json

import pytest

from hvq_utils.manifest import ManifestError, read_manifest, write_manifest


def test_manifest_records_inputs_by_hash_and_reads_back(tmp_path):
    a = write_manifest(tmp_path / "a", "prepare", {"image_size": 32}, counts={"found": 3})
    a = read_manifest(tmp_path / "a", "prepare")
    b = write_manifest(tmp_path / "b", "train-vqvae", {}, {"data": a}, steps=5)
    assert b["inputs"]["data"]["hash"] == a["hash"]
    assert read_manifest(tmp_path / "b")["steps"] == 5
    assert len(a["hash"]) == 64


def test_same_content_gives_the_same_hash(tmp_path):
    h1 = write_manifest(tmp_path / "x", "prepare", {"k": 1}, counts={"n": 2})["hash"]
    h2 = write_manifest(tmp_path / "y", "prepare", {"k": 1}, counts={"n": 2})["hash"]
    h3 = write_manifest(tmp_path / "z", "prepare", {"k": 1}, counts={"n": 3})["hash"]
    assert h1 == h2 != h3


def test_wrong_stage_is_refused_with_what_to_give(tmp_path):
    write_manifest(tmp_path, "prepare", {})
    with pytest.raises(ManifestError, match="holds a 'prepare' artifact, not 'encode'"):
        read_manifest(tmp_path, "encode")


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="has no manifest.json"):
        read_manifest(tmp_path, "prepare")


def test_edited_manifest_is_refused(tmp_path):
    write_manifest(tmp_path, "prepare", {}, counts={"found": 3})
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["counts"]["found"] = 4
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="edited after it was written"):
        read_manifest(tmp_path)
