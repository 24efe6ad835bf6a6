"""Each stage owns its settings: changing a key re-runs its own stage and those downstream,
never upstream, and an output made with other settings of its own group is refused naming
the key. Driven through the CLI at the smoke preset, one key of each group."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}


def _cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hvq_utils", *args, "--preset", "smoke"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def _refused(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr


def _manifest_bytes(d: Path) -> bytes:
    return (d / "manifest.json").read_bytes()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """prepare -> train-vqvae -> encode -> top prior, at the smoke preset, under one root."""
    root = tmp_path_factory.mktemp("stages")
    src = root / "images"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(src / f"{i}.png")
    _cli("prepare", "--src", str(src), "--out", str(root / "data"), "--workers", "1")
    _cli("train-vqvae", "--data", str(root / "data"), "--out", str(root / "vqvae"))
    _cli("encode", "--data", str(root / "data"), "--vqvae", str(root / "vqvae"), "--out", str(root / "codes"))
    _cli("train-prior", "--level", "top", "--codes", str(root / "codes"), "--out", str(root / "prior"))
    return root


def _upstream_untouched(root: Path, stages: list[tuple[str, ...]], setting: str) -> None:
    """Each upstream stage refuses the later stage's key (one line naming the stage that owns it)
    and leaves its output as it was."""
    for args in stages:
        out = Path(args[args.index("--out") + 1])
        before = _manifest_bytes(out)
        _refused(_cli(*args, "--set", setting, ok=False), f"--set {setting}: ", "belongs to stage")
        assert _manifest_bytes(out) == before


def test_a_data_setting_reruns_prepare_and_refuses_the_old_downstream(pipeline, tmp_path):
    root = pipeline
    src = str(root / "images")
    r = _cli("prepare", "--src", src, "--out", str(root / "data"), "--set", "jpeg_quality=80", ok=False)
    _refused(r, "made with jpeg_quality=95, not 80")
    _cli(
        "prepare", "--src", src, "--out", str(tmp_path / "data"), "--workers", "1", "--set", "jpeg_quality=80"
    )
    made = json.loads(_manifest_bytes(tmp_path / "data"))
    assert made["settings"]["data"]["jpeg_quality"] == 80
    r = _cli("train-vqvae", "--data", str(tmp_path / "data"), "--out", str(root / "vqvae"), ok=False)
    _refused(r, "made from another data")


def test_a_vqvae_setting_leaves_prepare_alone(pipeline, tmp_path):
    root = pipeline
    setting = "learning_rate=0.002"
    _upstream_untouched(
        root, [("prepare", "--src", str(root / "images"), "--out", str(root / "data"))], setting
    )
    r = _cli(
        "train-vqvae", "--data", str(root / "data"), "--out", str(root / "vqvae"), "--set", setting, ok=False
    )
    _refused(r, "made with learning_rate=0.001, not 0.002")
    _cli("train-vqvae", "--data", str(root / "data"), "--out", str(tmp_path / "vqvae"), "--set", setting)
    r = _cli(
        "encode",
        "--data",
        str(root / "data"),
        "--vqvae",
        str(tmp_path / "vqvae"),
        "--out",
        str(root / "codes"),
        ok=False,
    )
    _refused(r, "made from another vqvae")
    vqvae = json.loads((tmp_path / "vqvae" / "manifest.json").read_text())
    saved = json.dumps(vqvae)
    assert "jpeg_quality" in saved  # the data settings it was made from, in the manifest...
    import zipfile

    with zipfile.ZipFile(tmp_path / "vqvae" / "vqvae.keras") as z:
        model_config = z.read("config.json").decode()
    assert "jpeg_quality" not in model_config and "prior_dropout" not in model_config  # ...not the model


def test_an_encode_setting_leaves_the_vqvae_alone(pipeline, tmp_path):
    root = pipeline
    setting = "encode_batch_size=2"
    _upstream_untouched(
        root, [("train-vqvae", "--data", str(root / "data"), "--out", str(root / "vqvae"))], setting
    )
    args = ("encode", "--data", str(root / "data"), "--vqvae", str(root / "vqvae"))
    _refused(
        _cli(*args, "--out", str(root / "codes"), "--set", setting, ok=False), "encode_batch_size=4, not 2"
    )
    _cli(*args, "--out", str(tmp_path / "codes"), "--set", setting)
    same = json.loads(_manifest_bytes(tmp_path / "codes"))
    old = json.loads(_manifest_bytes(root / "codes"))
    assert same["histograms"] == old["histograms"]  # the batch size changes how, not what


def test_encode_flips_adds_the_flipped_train_images_codes_for_the_priors(pipeline, tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from hvq_utils.data import code_dataset, image_dataset
    from hvq_utils.loading import load_model

    root = pipeline  # its codes were made with the default, encode_flips=true
    args = ("encode", "--data", str(root / "data"), "--vqvae", str(root / "vqvae"))
    _refused(
        _cli(*args, "--out", str(root / "codes"), "--set", "encode_flips=false", ok=False),
        "encode_flips=True, not False",
    )
    _cli(*args, "--out", str(tmp_path / "codes"), "--set", "encode_flips=false")
    made = json.loads(_manifest_bytes(root / "codes"))
    old = json.loads(_manifest_bytes(tmp_path / "codes"))
    assert made["images"] == old["images"] == old["splits"]
    assert made["splits"] == {"train": 2 * old["splits"]["train"], "validation": old["splits"]["validation"]}

    def read(codes_dir, split):
        ds = code_dataset(codes_dir, split, batch_size=64, with_ids=True)
        out = {}
        for codes, ids in ds.as_numpy_iterator():
            for j, i in enumerate(ids):
                out[i.decode()] = {lv: c[j] for lv, c in codes.items()}
        return out

    flipped, plain = read(root / "codes", "train"), read(tmp_path / "codes", "train")
    assert set(flipped) == set(plain) | {f"{i}#flipped" for i in plain}
    assert read(tmp_path / "codes", "validation").keys() == read(root / "codes", "validation").keys()
    vq = load_model(root / "vqvae" / "vqvae.keras")
    images, ids = next(image_dataset(root / "data", "train", 64, with_ids=True).as_numpy_iterator())
    expected = vq.encode(images[:, :, ::-1])
    for j, i in enumerate(ids):
        for lv, c in expected.items():
            np.testing.assert_array_equal(flipped[f"{i.decode()}#flipped"][lv], np.asarray(c)[j])
            np.testing.assert_array_equal(flipped[i.decode()][lv], plain[i.decode()][lv])


def test_a_prior_setting_leaves_the_vqvae_and_the_codes_alone(pipeline, tmp_path):
    root = pipeline
    setting = "prior_dropout=0.3"
    _upstream_untouched(
        root,
        [
            ("train-vqvae", "--data", str(root / "data"), "--out", str(root / "vqvae")),
            (
                "encode",
                "--data",
                str(root / "data"),
                "--vqvae",
                str(root / "vqvae"),
                "--out",
                str(root / "codes"),
            ),
        ],
        setting,
    )
    args = ("train-prior", "--level", "top", "--codes", str(root / "codes"))
    _refused(
        _cli(*args, "--out", str(root / "prior"), "--set", setting, ok=False), "prior_dropout=0.1, not 0.3"
    )
    _cli(*args, "--out", str(tmp_path / "prior"), "--set", setting)
    assert json.loads(_manifest_bytes(tmp_path / "prior"))["settings"]["prior"]["prior_dropout"] == 0.3


def test_resume_from_an_earlier_output_continues_it_in_a_new_one(pipeline, tmp_path):
    """A new session: the earlier output is attached (read-only), training goes on from its
    last checkpoint into a new directory; an earlier run of other settings is refused."""
    root = pipeline
    args = (
        "train-vqvae",
        "--data",
        str(root / "data"),
        "--out",
        str(tmp_path / "vq"),
        "--resume-from",
        str(root / "vqvae"),
    )
    before = _manifest_bytes(root / "vqvae")
    r = _cli(*args, "--steps", "8")
    assert "resuming from" in r.stdout and str(root / "vqvae") in r.stdout
    assert json.loads(_manifest_bytes(tmp_path / "vq"))["steps"] == 8
    assert _manifest_bytes(root / "vqvae") == before
    other = ("train-vqvae", "--data", str(root / "data"), "--out", str(tmp_path / "other"))
    r = _cli(*other, "--resume-from", str(root / "vqvae"), "--set", "learning_rate=0.002", ok=False)
    _refused(r, "made with learning_rate=0.001, not 0.002")
