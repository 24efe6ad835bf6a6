"""Stage 01, prepare: finding, converting, rejecting, sharding, splitting and resuming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hvq_utils import get_preset
from hvq_utils import prepare as prepare_mod
from hvq_utils.data import decode as images_mod
from hvq_utils.data.decode import ImageSettings, find_images, resize_square, to_rgb
from hvq_utils.data.records import SHARD_RE, ShardWriter, image_dataset
from hvq_utils.prepare import PROGRESS, prepare_images, split_of

PAD = (200, 100, 50)  # an unusual background, so padding and alpha compositing are visible
BOMB_LIMIT = 50_000  # pixels; the bombs below are 90,000 (error) and 60,000 (warning)
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)

# relative path -> expected rejection reason (a word in it)
BROKEN = {
    "train/empty.jpg": "empty file",
    "train/notes.jpg": "not an image",
    "train/truncated.jpg": "truncated",
    "test/bomb.png": "decompression bomb",
    "test/bomb_warning.png": "decompression bomb",
    "test/tiny.png": "too small",
}
GOOD = [
    "train/exif_rotated.jpg", "train/cmyk.jpg", "train/deep16.png", "train/alpha.png",
    "train/anim.gif", "train/gray.png", "train/pic.webp", "train/pic.bmp", "train/pic.tiff",
    "test/UPPER.JPG", "test/sub dir/whale ü 鯨 fluke.jfif",
    *[f"train/smooth_{k}.png" for k in range(6)],
]


@pytest.fixture(autouse=True)
def bomb_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)


def smoke(**overrides):
    return get_preset("smoke", pad_color=PAD, **overrides)


def halves(size: tuple[int, int], left, right, mode: str = "RGB") -> Image.Image:
    img = Image.new(mode, size, left)
    img.paste(Image.new(mode, (size[0] // 2, size[1]), right), (size[0] - size[0] // 2, 0))
    return img


def smooth_image(k: int) -> np.ndarray:
    """uint8 (32, 32, 3): smooth gradients, so JPEG at quality 95 round-trips closely."""
    y, x = np.mgrid[0:32, 0:32] / 31.0
    rgb = np.stack([x, y, (x + y) / 2], -1) * (0.5 + 0.1 * k) * 255
    return rgb.astype(np.uint8)


def make_awkward_folder(root: Path) -> Path:
    """The Kaggle layout (train/, test/, train.csv) with one file of every awkward kind."""
    (root / "train").mkdir(parents=True)
    (root / "test" / "sub dir").mkdir(parents=True)
    t = root / "train"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    halves((64, 40), RED, BLUE).save(t / "exif_rotated.jpg", exif=exif, quality=95)
    Image.new("CMYK", (48, 48), (0, 255, 255, 0)).save(t / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((48, 48), 32768, np.uint16)).save(t / "deep16.png")
    halves((48, 48), (0, 255, 0, 0), (0, 0, 255, 255), "RGBA").save(t / "alpha.png")
    red, green = Image.new("RGB", (40, 40), RED), Image.new("RGB", (40, 40), GREEN)
    red.convert("P").save(t / "anim.gif", save_all=True, append_images=[green.convert("P")], duration=50)
    Image.fromarray(np.tile(np.arange(0, 240, 5, dtype=np.uint8), (48, 1))).save(t / "gray.png")
    for ext in ("webp", "bmp", "tiff"):
        Image.new("RGB", (40, 40), GREEN).save(t / f"pic.{ext}")
    for k in range(6):
        Image.fromarray(smooth_image(k)).save(t / f"smooth_{k}.png")
    (t / "empty.jpg").write_bytes(b"")
    (t / "notes.jpg").write_text("this is not a picture\n")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(t / "full.jpg", quality=95)
    data = (t / "full.jpg").read_bytes()
    (t / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (t / "full.jpg").unlink()
    s = root / "test"
    Image.new("RGB", (300, 300)).save(s / "bomb.png")  # over twice the limit: Pillow raises
    Image.new("RGB", (300, 200)).save(s / "bomb_warning.png")  # between 1x and 2x: Pillow warns
    Image.new("RGB", (8, 8)).save(s / "tiny.png")
    Image.new("RGB", (40, 40), BLUE).save(s / "UPPER.JPG")
    Image.new("RGB", (40, 40), RED).save(s / "sub dir" / "whale ü 鯨 fluke.jfif")
    (root / "train.csv").write_text("Image,Id\nexif_rotated.jpg,w_1\n")
    (root / "README.txt").write_text("not an image\n")
    return root


def stored_images(out: Path) -> dict[str, np.ndarray]:
    """source id -> the stored image as uint8 (S, S, 3), read back through the reader."""
    found = {}
    for split in ("train", "validation"):
        manifest = json.loads((out / "manifest.json").read_text())
        if not manifest["splits"][split]:
            continue
        for images, ids in image_dataset(out, split, batch_size=8, with_ids=True):
            for img, sid in zip(images.numpy(), ids.numpy(), strict=True):
                found[sid.decode()] = np.rint(img * 255).astype(np.uint8)
    return found


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    """(source folder, output folder, manifest) of one run over the awkward folder, 2 workers."""
    root = make_awkward_folder(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
        manifest = prepare_images(root, out, smoke(shard_mb=0.004), workers=2)
    return root, out, manifest


def test_accounting_found_equals_written_plus_rejected(awkward, capsys):
    _, _, m = awkward
    c = m["counts"]
    found = len(GOOD) + len(BROKEN)
    assert c == {"found": found, "written": len(GOOD), "rejected": len(BROKEN), "ignored": 2}
    assert sum(m["splits"].values()) == c["written"]
    assert sum(s["count"] for s in m["shards"]) == c["written"]


def test_summary_states_the_accounting_and_lists_rejects(tmp_path, caplog):
    root = make_awkward_folder(tmp_path / "src")
    with caplog.at_level("INFO", logger="hvq_utils"):
        prepare_images(root, tmp_path / "out", smoke(), workers=1)
    printed = caplog.text
    assert "found 23 images = 17 written + 6 rejected" in printed
    assert "train/notes.jpg: not an image" in printed


def test_every_broken_file_is_rejected_with_its_reason(awkward):
    _, _, m = awkward
    reasons = {r["path"]: r["reason"] for r in m["rejected"]}
    assert set(reasons) == set(BROKEN)
    for path, word in BROKEN.items():
        assert word in reasons[path], (path, reasons[path])


def test_exif_orientation_is_applied(awkward):
    img = stored_images(awkward[1])["train/exif_rotated.jpg"].astype(int)
    # Stored 64x40 sideways -> upright 40x64 portrait -> 20x32 centred, padded left and right.
    assert np.abs(img[:, :4] - PAD).max() <= 12 and np.abs(img[:, -4:] - PAD).max() <= 12
    assert np.abs(img[4, 16] - RED).max() <= 40  # the stored left half is now the top
    assert np.abs(img[-4, 16] - BLUE).max() <= 40


def test_colour_modes_become_8bit_rgb(awkward):
    got = {k: v.astype(int) for k, v in stored_images(awkward[1]).items()}
    assert np.abs(got["train/cmyk.jpg"][16, 16] - RED).max() <= 12
    assert np.abs(got["train/deep16.png"][16, 16] - 128).max() <= 3  # scaled, not clipped to 255
    alpha = got["train/alpha.png"]
    assert np.abs(alpha[16, 4] - PAD).max() <= 8  # transparent: the background colour
    assert np.abs(alpha[16, 28] - BLUE).max() <= 8
    assert np.abs(got["train/anim.gif"][16, 16] - RED).max() <= 12  # the first frame
    gray = got["train/gray.png"]
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 3 and gray[16, 28, 0] > gray[16, 4, 0] + 100
    for name in ("train/pic.webp", "train/pic.bmp", "train/pic.tiff"):
        assert np.abs(got[name][16, 16] - GREEN).max() <= 12
    assert np.abs(got["test/sub dir/whale ü 鯨 fluke.jfif"][16, 16] - RED).max() <= 12
    assert np.abs(got["test/UPPER.JPG"][16, 16] - BLUE).max() <= 12


def test_pixels_round_trip_through_a_shard(awkward):
    got = stored_images(awkward[1])
    for k in range(6):
        diff = np.abs(got[f"train/smooth_{k}.png"].astype(int) - smooth_image(k).astype(int))
        assert diff.mean() < 2.0 and diff.max() <= 16, (k, diff.mean(), diff.max())


def test_shard_names_carry_their_record_counts(awkward):
    import tensorflow as tf

    _, out, m = awkward
    assert len(m["shards"]) > 2  # shard_mb=0.004: a few records per shard
    for shard in m["shards"]:
        match = SHARD_RE.match(shard["file"])
        assert match and match["split"] == shard["split"]
        n = sum(1 for _ in tf.data.TFRecordDataset(str(out / shard["file"])))
        assert int(match["count"]) == shard["count"] == n
    files = sorted(p.name for p in out.iterdir() if p.suffix == ".tfrecord")
    assert files == sorted(s["file"] for s in m["shards"])


def test_split_is_deterministic_and_independent_of_order_and_workers(awkward, tmp_path):
    root, _, m = awkward
    copy = tmp_path / "copy"  # the same files, created in reverse order (another walk order)
    for p in sorted(root.rglob("*"), reverse=True):
        if p.is_file():
            (copy / p.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, copy / p.relative_to(root))
    again = prepare_images(copy, tmp_path / "out", smoke(shard_mb=0.004), workers=1)
    assert again["shards"] == m["shards"]  # same files, same bytes, same sha256
    assert again["splits"] == m["splits"] and m["splits"]["validation"] > 0


def test_split_of_follows_the_fraction():
    names = [f"train/{i:05d}.jpg" for i in range(4000)]
    val = [n for n in names if split_of(n, 0.2) == "validation"]
    assert 0.17 < len(val) / len(names) < 0.23
    assert val == [n for n in names if split_of(n, 0.2) == "validation"]
    assert all(split_of(n, 0.0) == "train" for n in names)


def test_a_killed_run_leaves_no_finished_looking_file_and_a_rerun_completes(awkward, tmp_path, monkeypatch):
    root, _, reference = awkward
    out = tmp_path / "out"
    config = smoke(shard_mb=0.004)
    real_write, calls = ShardWriter.write, []

    def dying_write(self, record):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # a kill in the middle of a shard
        real_write(self, record)

    monkeypatch.setattr(ShardWriter, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_images(root, out, config, workers=1)
    monkeypatch.setattr(ShardWriter, "write", real_write)
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    finished = [p.name for p in out.glob("*.tfrecord")]
    assert finished and len(finished) < len(reference["shards"])
    # A SIGKILL runs no clean-up: plant what it would leave, plus a stray finished-looking shard.
    (out / ".train-00009.tfrecord.tmp").write_bytes(b"half a shard")
    (out / "train-00042-n00003.tfrecord").write_bytes(b"not from this run")
    manifest = prepare_images(root, out, config, workers=1)
    assert manifest["shards"] == reference["shards"]
    assert manifest["counts"] == reference["counts"]
    assert sorted(p.name for p in out.glob("*.tfrecord")) == sorted(s["file"] for s in manifest["shards"])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_rerun_of_a_finished_run_keeps_its_shards(tmp_path, monkeypatch):
    root = make_awkward_folder(tmp_path / "src")
    first = prepare_images(root, tmp_path / "out", smoke(), workers=1)
    calls = []
    monkeypatch.setattr(prepare_mod, "prepare_one", lambda *a, **k: calls.append(a) or (None, "x"))
    second = prepare_images(root, tmp_path / "out", smoke(), workers=1)
    assert not calls  # nothing decoded again; rejected files of the tail are only re-checked
    assert second["shards"] == first["shards"] and second["counts"] == first["counts"]
    assert (tmp_path / "out" / PROGRESS).is_file()


def test_find_images_matches_any_case_and_counts_other_files(tmp_path):
    for name in ("a.JPG", "b.Jpeg", "c.PNG", "d.TiF", "e.jfif", "f.txt", "g.csv", "h"):
        (tmp_path / name).write_bytes(b"x")
    images, ignored = find_images(tmp_path)
    assert images == ["a.JPG", "b.Jpeg", "c.PNG", "d.TiF", "e.jfif"] and ignored == 3


@pytest.mark.parametrize("policy", ["pad", "crop", "stretch"])
def test_resize_policies(policy):
    wide = Image.new("RGB", (64, 32), GREEN)
    wide.paste(Image.new("RGB", (8, 32), RED), (0, 0))
    wide.paste(Image.new("RGB", (8, 32), BLUE), (56, 0))
    out = np.asarray(resize_square(wide, 16, policy, PAD)).astype(int)
    assert out.shape == (16, 16, 3)
    if policy == "pad":  # all of it, with bands above and below
        assert np.abs(out[0, 8] - PAD).max() == 0 and np.abs(out[8, 0] - RED).max() < 30
    elif policy == "crop":  # the centre square only
        assert np.abs(out - GREEN).max() < 30
    else:  # all of it, squeezed
        assert np.abs(out[0, 0] - RED).max() < 30 and np.abs(out[0, 15] - BLUE).max() < 30


def test_deep_images_scale_to_8_bits():
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert np.asarray(to_rgb(floats, PAD))[0, :, 0].tolist() == [0, 128, 255]
    ints = Image.fromarray(np.array([[0, 100_000, 200_000]], np.int32))
    assert np.asarray(to_rgb(ints, PAD))[0, :, 0].tolist() == [0, 128, 255]


def test_prepare_one_never_raises(tmp_path, monkeypatch):
    path = tmp_path / "odd.png"
    Image.new("RGB", (40, 40)).save(path)
    settings = ImageSettings.from_config(smoke())

    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(images_mod, "resize_square", broken)
    jpeg, reason = images_mod.prepare_one(str(path), settings)
    assert jpeg is None and reason == "unreadable: RuntimeError: decoder exploded"


def test_sample_source_prepares_the_shipped_photographs(tmp_path, monkeypatch):
    monkeypatch.undo()  # Pillow's own pixel limit: the photographs are up to 1411x1411
    m = prepare_images("sample", tmp_path / "out", smoke(), workers=1, sample_count=12)
    assert m["counts"]["found"] == m["counts"]["written"] == 12 and m["source"] == "sample"
    assert m["splits"]["train"] > 0


def test_empty_source_and_missing_folder_fail_with_one_line(tmp_path):
    with pytest.raises(ValueError, match="holds no images"):
        prepare_images(tmp_path, tmp_path / "out", smoke(), workers=1)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        prepare_images(tmp_path / "nope", tmp_path / "out", smoke(), workers=1)


def test_cli_bad_setting_is_one_line_and_exit_2(tmp_path, capsys):
    from hvq_utils.cli import main

    for bad in ("bogus=1", "image_size=33", "resize"):
        code = main(["prepare", "--src", str(tmp_path), "--out", str(tmp_path / "o"), "--preset", "smoke",
                     "--set", bad])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and "\n" not in err, (bad, err)


class _FakeKagglehub:
    def __init__(self, result=None, error=None):
        self.calls, self.result, self.error = [], result, error

    def competition_download(self, handle):
        self.calls.append(handle)
        if self.error is not None:
            raise self.error
        return self.result


def _platform(monkeypatch, name, hub):
    import sys

    monkeypatch.setattr("hvq_utils.prepare.detect_platform", lambda: name)
    monkeypatch.setattr("hvq_utils.kaggle_auth.detect_platform", lambda: name)
    monkeypatch.setitem(sys.modules, "kagglehub", hub)


def test_auto_source_on_each_platform(monkeypatch, tmp_path):
    from pathlib import Path

    from hvq_utils.prepare import COMPETITION, find_source

    for key in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    hub = _FakeKagglehub(result=str(tmp_path / "download"))
    _platform(monkeypatch, "local", hub)
    assert find_source("auto") == "sample" and find_source("/my/photos") == "/my/photos"

    # Kaggle: the attached competition, else kagglehub attaches it (no credentials needed there).
    _platform(monkeypatch, "kaggle", hub)
    attached = f"/kaggle/input/competitions/{COMPETITION}"
    monkeypatch.setattr(Path, "is_dir", lambda self: str(self) == attached)
    assert find_source("auto") == attached and hub.calls == []
    monkeypatch.setattr(Path, "is_dir", lambda self: False)
    assert find_source("auto") == str(tmp_path / "download") and hub.calls == [COMPETITION]

    # Colab: credentials are needed; a refusal says what to do, in one line.
    _platform(monkeypatch, "colab", hub)
    with pytest.raises(ValueError, match="Kaggle credentials") as missing:
        find_source("auto")
    assert "\n" not in str(missing.value)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "not-a-real-token")
    assert find_source("auto") == str(tmp_path / "download")
    _platform(monkeypatch, "colab", _FakeKagglehub(error=RuntimeError("403 Forbidden\nmore")))
    refusal = r"403 Forbidden\); accept the rules at kaggle.com"
    with pytest.raises(FileNotFoundError, match=refusal) as refused:
        find_source("auto")
    assert "\n" not in str(refused.value) and "not-a-real-token" not in str(refused.value)
