"""Stage 07 through the CLI at the smoke preset: the gallery, same settings same images, resume
after a cut, variations and inpainting keep their codes, and mismatched inputs are refused."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hvq_utils.config import LEVELS

pytestmark = pytest.mark.slow
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}


def _cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hvq_utils", *args, "--preset", "smoke"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke VQ-VAE and its three priors, made in this process (the stages' functions)."""
    from hvq_utils import get_preset
    from hvq_utils.encode import encode_codes
    from hvq_utils.prepare import prepare_images
    from hvq_utils.train_prior import train_prior
    from hvq_utils.train_vqvae import train_vqvae

    root = tmp_path_factory.mktemp("sample")
    src = root / "images"
    src.mkdir()
    rng = np.random.default_rng(5)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(src / f"{i}.png")
    config = get_preset("smoke")
    prepare_images(src, root / "data", config, workers=1)
    train_vqvae(root / "data", root / "vqvae", config)
    encode_codes(root / "data", root / "vqvae", root / "codes", config)
    for level in LEVELS:
        train_prior(level, root / "codes", root / f"prior-{level}", config)
    return root


def _inputs(root: Path) -> list[str]:
    args = ["--vqvae", str(root / "vqvae")]
    for level in LEVELS:
        args += [f"--{level}", str(root / f"prior-{level}")]
    return args


def test_samples_a_gallery_ranked_by_likelihood_and_resumes_to_the_same_images(trained, tmp_path):
    out = tmp_path / "samples"
    args = ["sample", *_inputs(trained), "--out", str(out), "--n", "5", "--batch-size", "2", "--seed", "3"]
    _cli(*args)
    manifest = json.loads((out / "manifest.json").read_text())
    totals = [s["total_bits"] for s in manifest["samples"]]
    assert len(totals) == 5 and totals == sorted(totals)  # most likely first
    assert manifest["settings"]["sample"]["sample_seed"] == 3
    assert (
        manifest["inputs"]["vqvae"]["hash"]
        == json.loads((trained / "vqvae" / "manifest.json").read_text())["hash"]
    )
    with zipfile.ZipFile(out / "gallery.zip") as z:
        names = set(z.namelist())
    assert {"index.html", "contact_sheet.png"} <= names
    assert {f"samples/sample_{i:04d}.png" for i in range(5)} <= names
    first = {p.name: p.read_bytes() for p in (out / "samples").iterdir()}

    # Finished: the same command does nothing.
    r = _cli(*args)
    assert "nothing to do" in r.stdout

    # Cut off before the bottom level was done: the re-run samples the bottom codes only,
    # and the images are those of the uninterrupted run.
    (out / "manifest.json").unlink()
    (out / "progress" / "bottom.npz").unlink()
    shutil.rmtree(out / "samples")
    _cli(*args)
    assert {p.name: p.read_bytes() for p in (out / "samples").iterdir()} == first

    # Another seed into the same output is refused, naming the setting.
    r = _cli(*args[:-1], "4", ok=False)
    assert r.returncode == 2 and "sample_seed=3, not 4" in r.stderr


def _source_folder(root: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    for i, name in enumerate(sorted((root / "images").iterdir())[:2]):
        shutil.copy(name, folder / f"s{i}.png")
    return folder


def _source_codes(root: Path, folder: Path) -> dict:
    from hvq_utils import get_preset
    from hvq_utils.loading import load_model
    from hvq_utils.sample import load_sources

    images, _ = load_sources(folder, get_preset("smoke"))
    vq = load_model(root / "vqvae" / "vqvae.keras", compile=False)
    return {lv: np.asarray(c) for lv, c in vq.encode(images).items()}


def test_variations_keep_the_source_top_codes(trained, tmp_path):
    folder = _source_folder(trained, tmp_path)
    out = tmp_path / "variations"
    _cli("sample", *_inputs(trained), "--out", str(out), "--n", "4", "--variations-of", str(folder))
    manifest = json.loads((out / "manifest.json").read_text())
    with np.load(out / "codes.npz") as f:
        codes = {lv: f[lv] for lv in LEVELS}
    source = _source_codes(trained, folder)
    for sample in range(4):
        np.testing.assert_array_equal(codes["top"][sample], source["top"][sample % 2])
    assert manifest["mode"] == "variations" and (out / "sources").is_dir()


def test_inpainting_keeps_every_code_outside_the_region(trained, tmp_path):
    folder = _source_folder(trained, tmp_path)
    out = tmp_path / "inpaint"
    _cli(
        "sample",
        *_inputs(trained),
        "--out",
        str(out),
        "--n",
        "2",
        "--variations-of",
        str(folder),
        "--inpaint",
        "8,8,24,24",
    )
    with np.load(out / "codes.npz") as f:
        codes = {lv: f[lv] for lv in LEVELS}
    source = _source_codes(trained, folder)
    for lv in LEVELS:
        g = codes[lv].shape[1]
        f = 32 // g
        outside = np.ones((g, g), bool)
        outside[8 // f : -(-24 // f), 8 // f : -(-24 // f)] = False  # cells touching the region
        np.testing.assert_array_equal(codes[lv][:, outside], source[lv][:, outside])


def test_priors_of_another_vqvae_are_refused_naming_both(trained, tmp_path):
    from hvq_utils.manifest import read_manifest, write_manifest

    other = tmp_path / "prior-top"
    shutil.copytree(trained / "prior-top", other)
    m = read_manifest(other)
    fields = {
        k: v
        for k, v in m.items()
        if k not in ("stage", "version", "created", "settings", "inputs", "hash", "_path")
    }
    fields["vqvae"] = {**m["vqvae"], "hash": "f" * 64}
    from hvq_utils import get_preset

    write_manifest(
        other, "train-prior", get_preset("smoke"), {"codes": {"stage": "encode", "hash": "e" * 64}}, **fields
    )
    args = _inputs(trained)
    args[args.index("--top") + 1] = str(other)
    r = _cli("sample", *args, "--out", str(tmp_path / "s"), ok=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "trained on codes of another VQ-VAE (hash ffffffff)" in r.stderr and "train-vqvae at" in r.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--inpaint", "0,0,99,5"], "not a rectangle inside the 32x32 image"),
        (["--inpaint", "1,1,4,4"], "--inpaint needs the images to inpaint"),
        (["--temperature", "0"], "temperature=0.0 must be above 0"),
        (["--top-p", "2"], "top_p=2.0 must be in (0, 1]"),
    ],
)
def test_bad_sampling_arguments_are_one_line(trained, tmp_path, extra, fragment):
    r = _cli("sample", *_inputs(trained), "--out", str(tmp_path / "s"), *extra, ok=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert fragment in r.stderr
