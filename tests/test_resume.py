"""Interrupted training resumes: a SIGKILL mid-run, then the same command finishes at exactly --steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hvq_utils", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)


def _kill_after_first_checkpoint(args: list[str], out: Path) -> None:
    """Start the command, SIGKILL it as soon as its first checkpoint lands, mid-way through."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hvq_utils", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list((out / "checkpoints").glob("step-*.keras")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    src = root / "images"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(src / f"{i}.png")
    r = _cli("prepare", "--src", str(src), "--out", str(root / "data"), "--preset", "smoke", "--workers", "1")
    assert r.returncode == 0, r.stderr
    return root / "data"


@pytest.fixture(scope="module")
def codes_dir(data_dir):
    vq, codes = data_dir.parent / "vqvae", data_dir.parent / "codes"
    r = _cli("train-vqvae", "--data", str(data_dir), "--out", str(vq), "--preset", "smoke")
    assert r.returncode == 0, r.stderr
    r = _cli("encode", "--data", str(data_dir), "--vqvae", str(vq), "--out", str(codes))
    assert r.returncode == 0, r.stderr
    return codes


def test_vqvae_training_survives_sigkill(data_dir, tmp_path):
    out = tmp_path / "vqvae"
    args = [
        "train-vqvae",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--preset",
        "smoke",
        "--steps",
        "40",
        "--set",
        "checkpoint_every=4",
    ]
    _kill_after_first_checkpoint(args, out)
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == 40
    # Once finished, the same command changes nothing, so the codes and priors made from
    # this VQ-VAE still fit it.
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stdout
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_prior_training_survives_sigkill(codes_dir, tmp_path):
    out = tmp_path / "prior"
    args = [
        "train-prior",
        "--level",
        "middle",
        "--codes",
        str(codes_dir),
        "--out",
        str(out),
        "--preset",
        "smoke",
        "--steps",
        "60",
        "--set",
        "checkpoint_every=4",
    ]
    _kill_after_first_checkpoint(args, out)
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == 60
    assert (
        manifest["inputs"]["codes"]["hash"] == json.loads((codes_dir / "manifest.json").read_text())["hash"]
    )


def _one_line_refusal(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr


def test_a_prior_takes_grids_and_codebooks_from_the_codes_and_its_own_settings_from_the_preset(
    codes_dir, tmp_path
):
    """Codes made at the smoke preset, a prior asked for at the demo preset: the demo prior's
    settings on the codes' own grids and codebook sizes."""
    out = tmp_path / "p"
    r = _cli(
        "train-prior", "--level", "middle", "--codes", str(codes_dir), "--out", str(out),
        "--preset", "demo", "--steps", "2", "--set", "prior_batch_size=4",
        "--set", "checkpoint_every=2",
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["prior"]["prior_channels"] == [64, 48, 32]  # demo's
    assert manifest["settings"]["vqvae"]["codebook_sizes"] == [16, 8, 4]  # the smoke codes'
    assert (manifest["grid_size"], manifest["codebook_size"]) == (8, 8)


def test_a_directory_of_the_wrong_stage_is_refused(data_dir, tmp_path):
    r = _cli("train-prior", "--level", "top", "--codes", str(data_dir), "--out", str(tmp_path / "p"))
    _one_line_refusal(r, "not 'encode'")
    assert not (tmp_path / "p").exists()
