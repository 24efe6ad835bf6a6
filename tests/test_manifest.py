import json

import pytest

from hvq_utils import get_preset
from hvq_utils.manifest import ManifestError, check_output, read_manifest, write_manifest

SMOKE = get_preset("smoke")
DATA = {"stage": "prepare", "hash": "a" * 64, "_path": "data"}


def test_manifest_records_inputs_by_hash_and_reads_back(tmp_path):
    write_manifest(tmp_path / "a", "prepare", SMOKE, counts={"found": 3})
    a = read_manifest(tmp_path / "a", "prepare")
    b = write_manifest(tmp_path / "b", "train-vqvae", SMOKE, {"data": a}, steps=5)
    assert b["inputs"]["data"]["hash"] == a["hash"]
    assert read_manifest(tmp_path / "b")["steps"] == 5
    assert len(a["hash"]) == 64


def test_a_manifest_records_its_own_group_and_the_groups_upstream_only(tmp_path):
    m = write_manifest(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    assert set(m["settings"]) == {"data", "vqvae", "runtime"}
    assert "prior_dropout" not in json.dumps(m) and "temperature" not in json.dumps(m)
    prior = write_manifest(tmp_path / "p", "train-prior", SMOKE, {"codes": DATA})
    assert set(prior["settings"]) == {"data", "vqvae", "encode", "prior", "runtime"}


def test_same_content_gives_the_same_hash(tmp_path):
    h1 = write_manifest(tmp_path / "x", "prepare", SMOKE, counts={"n": 2})["hash"]
    h2 = write_manifest(tmp_path / "y", "prepare", SMOKE, counts={"n": 2})["hash"]
    h3 = write_manifest(tmp_path / "z", "prepare", SMOKE, counts={"n": 3})["hash"]
    assert h1 == h2 != h3


def test_wrong_stage_is_refused_with_what_to_give(tmp_path):
    write_manifest(tmp_path, "prepare", SMOKE)
    with pytest.raises(ManifestError, match="holds a 'prepare' artifact, not 'encode'"):
        read_manifest(tmp_path, "encode")


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="has no manifest.json"):
        read_manifest(tmp_path, "prepare")


def test_edited_manifest_is_refused(tmp_path):
    write_manifest(tmp_path, "prepare", SMOKE, counts={"found": 3})
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["counts"]["found"] = 4
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="edited after it was written"):
        read_manifest(tmp_path)


# --- the one rule: finished / resume / refuse ---


def test_new_then_unfinished_resumes_then_finished(tmp_path):
    assert check_output(tmp_path, "train-vqvae", SMOKE, {"data": DATA}).state == "new"
    assert check_output(tmp_path, "train-vqvae", SMOKE, {"data": DATA}).state == "resume"
    done = write_manifest(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    verdict = check_output(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    assert verdict.state == "finished" and verdict.manifest["hash"] == done["hash"]


def test_more_steps_resume_a_finished_output(tmp_path):
    write_manifest(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    assert check_output(tmp_path, "train-vqvae", SMOKE.replace(steps=99), {"data": DATA}).state == "resume"


def test_settings_of_other_groups_never_change_the_verdict(tmp_path):
    write_manifest(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    other = SMOKE.replace(prior_dropout=0.3, temperature=0.5, encode_batch_size=8, checkpoint_every=7)
    assert check_output(tmp_path, "train-vqvae", other, {"data": DATA}).state == "finished"


@pytest.mark.parametrize("finished", [True, False])
def test_other_settings_of_the_own_group_are_refused_naming_the_key(tmp_path, finished):
    if finished:
        write_manifest(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    else:
        check_output(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    with pytest.raises(ManifestError, match="made with learning_rate=0.001, not 0.002"):
        check_output(tmp_path, "train-vqvae", SMOKE.replace(learning_rate=0.002), {"data": DATA})


def test_other_inputs_or_level_or_stage_are_refused(tmp_path):
    write_manifest(tmp_path, "train-prior", SMOKE, {"codes": DATA}, level="top")
    with pytest.raises(ManifestError, match="made from another codes"):
        check_output(tmp_path, "train-prior", SMOKE, {"codes": {**DATA, "hash": "b" * 64}}, {"level": "top"})
    with pytest.raises(ManifestError, match="made with level='top', not 'middle'"):
        check_output(tmp_path, "train-prior", SMOKE, {"codes": DATA}, {"level": "middle"})
    with pytest.raises(ManifestError, match="holds a 'train-prior' artifact; give encode a directory"):
        check_output(tmp_path, "encode", SMOKE, {"codes": DATA})


def test_an_earlier_read_only_output_is_checked_without_writing_to_it(tmp_path):
    write_manifest(tmp_path, "train-vqvae", SMOKE, {"data": DATA})
    before = sorted(p.name for p in tmp_path.iterdir())
    assert (
        check_output(tmp_path, "train-vqvae", SMOKE.replace(steps=99), {"data": DATA}, record=False).state
        == "resume"
    )
    with pytest.raises(ManifestError, match="learning_rate"):
        check_output(tmp_path, "train-vqvae", SMOKE.replace(learning_rate=0.5), {"data": DATA}, record=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run.json written there
