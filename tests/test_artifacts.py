import pytest

from hvq_utils import get_preset
from hvq_utils.artifacts import locate, output_dir
from hvq_utils.manifest import ManifestError, write_manifest


def test_auto_finds_the_newest_artifact_of_the_stage(tmp_path, monkeypatch):
    write_manifest(tmp_path / "ds1" / "data", "prepare", get_preset("smoke"))
    write_manifest(tmp_path / "ds2" / "vq", "train-vqvae", get_preset("smoke"))
    monkeypatch.setattr("time.strftime", lambda *a: "2099-01-01T00:00:00Z")
    write_manifest(tmp_path / "ds3" / "nested" / "data", "prepare", get_preset("smoke", image_size=64))
    assert locate("prepare", "auto", roots=(str(tmp_path),)) == tmp_path / "ds3" / "nested" / "data"
    assert locate("train-vqvae", "auto", roots=(str(tmp_path),)) == tmp_path / "ds2" / "vq"


def test_nothing_found_says_how_to_attach_it(tmp_path):
    with pytest.raises(
        ManifestError, match="no 'encode' artifact under .*attach the earlier notebook's output"
    ):
        locate("encode", "auto", roots=(str(tmp_path),))


def test_an_explicit_path_of_the_wrong_stage_is_refused(tmp_path):
    write_manifest(tmp_path, "prepare", get_preset("smoke"))
    with pytest.raises(ManifestError, match="not 'encode'"):
        locate("encode", tmp_path)


def test_output_goes_under_runs_off_kaggle(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setattr("hvq_utils.artifacts.detect_platform", lambda: "local")
    assert str(output_dir("vqvae")) == "runs/vqvae"
    assert str(output_dir("vqvae", "/tmp/x")) == "/tmp/x"
