import sys
import types
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from hvq_utils.gallery import code_figure, contact_sheet, offer_download, write_gallery

N, S = 5, 32
GRIDS = {"top": 2, "middle": 4, "bottom": 8}
K = {"top": 16, "middle": 8, "bottom": 4}
HOSTILE = '<script>alert("x")</script> & $a$'


def _inputs(n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    codes = {lv: rng.integers(0, K[lv], (n, g, g), dtype=np.int32) for lv, g in GRIDS.items()}
    bits = {lv: rng.uniform(0.5, 4.0, n).astype(np.float32) for lv in GRIDS}
    settings = {"temperature": 0.87, "top_k": 32, "seed": 1234, "mode": "sample", "vqvae_hash": "ab12cd"}
    return images, codes, bits, settings


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def _png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gallery")
    images, codes, bits, settings = _inputs()
    sources = 255 - images
    titles = [HOSTILE] + [f"sample {i}" for i in range(1, N)]
    out = write_gallery(
        tmp_path / "g", images, codes, bits, settings, titles=titles, sources=sources, codebook_sizes=K
    )
    return tmp_path / "g", out, images, bits, settings


def test_samples_are_lossless_pngs_and_figures_are_pngs(gallery):
    root, out, images, _, _ = gallery
    for i in range(N):
        assert np.array_equal(np.asarray(_png(root / f"samples/sample_{i:04d}.png")), images[i])
        assert np.array_equal(np.asarray(_png(root / f"sources/source_{i:04d}.png")), 255 - images[i])
        fig = _png(root / f"codes/sample_{i:04d}.png")
        assert fig.width > 3 * fig.height  # image and three maps side by side
    sheet = _png(out["contact_sheet"])
    assert sheet.size == (3 * S + 4 * 4, 2 * S + 3 * 4)  # 5 samples: 3 columns, 2 rows, gap 4


def test_contact_sheet_places_tiles_in_rank_order_with_gaps():
    images = np.stack([np.full((8, 8, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    sheet = contact_sheet(images, gap=2)
    assert sheet.dtype == np.uint8 and sheet.shape == (2 * 8 + 3 * 2, 3 * 8 + 4 * 2, 3)
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = 2 + r * 10, 2 + c * 10
        assert (sheet[y : y + 8, x : x + 8] == 10 * (i + 1)).all()
    assert (sheet[:2] == 255).all() and (sheet[:, 10:12] == 255).all()  # border and gap
    assert (sheet[12:20, 22:30] == 255).all()  # the empty sixth cell
    assert contact_sheet(images, columns=1).shape[:2] == (5 * 8 + 6 * 4, 8 + 2 * 4)


def test_contact_sheet_downscales_to_max_width():
    images = np.zeros((16, 300, 300, 3), np.uint8)
    sheet = contact_sheet(images, gap=4, max_width=1000)
    tile = (1000 - 5 * 4) // 4
    assert sheet.shape == (4 * tile + 5 * 4, 4 * tile + 5 * 4, 3)
    assert sheet.shape[1] <= 1000
    with pytest.raises(ValueError, match="max_width=10 leaves no room"):
        contact_sheet(images, max_width=10)


def test_zip_holds_every_file_but_itself(gallery):
    root, out, _, _, _ = gallery
    with zipfile.ZipFile(out["zip"]) as zf:
        names = set(zf.namelist())
        assert zf.read("index.html") == (root / "index.html").read_bytes()
    expected = {"index.html", "contact_sheet.png"}
    for i in range(N):
        expected |= {
            f"samples/sample_{i:04d}.png",
            f"codes/sample_{i:04d}.png",
            f"sources/source_{i:04d}.png",
        }
    assert names == expected == set(out["files"])
    assert "gallery.zip" not in names and not any(n.startswith("/") for n in names)


def test_index_links_only_to_existing_relative_files(gallery):
    root, _, _, _, _ = gallery
    parser = _Links()
    parser.feed((root / "index.html").read_text(encoding="utf-8"))
    assert len(parser.links) >= 3 * N + 2
    for link in parser.links:
        assert not urlparse(link).scheme and not link.startswith("/"), link
        assert (root / link).is_file(), link


def test_index_shows_bits_totals_and_settings(gallery):
    root, _, _, bits, settings = gallery
    page = (root / "index.html").read_text(encoding="utf-8")
    for i in range(N):
        for lv in GRIDS:
            assert f"{bits[lv][i]:.3f}" in page
        total = sum(float(bits[lv][i]) * g * g for lv, g in GRIDS.items())
        assert f"{total:.1f}" in page
    for key, value in settings.items():
        assert f"<th>{key}</th><td>{value}</td>" in page


def test_index_escapes_hostile_titles(gallery):
    page = (gallery[0] / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; $a$" in page


def test_code_maps_use_fixed_colour_range():
    images, codes, bits, _ = _inputs(1)
    fig = code_figure(
        images[0], {lv: c[0] for lv, c in codes.items()}, {lv: b[0] for lv, b in bits.items()}, K
    )
    for ax, lv in zip(fig.axes[1:4], GRIDS, strict=True):
        assert ax.images[0].get_clim() == (0, K[lv] - 1)
        assert f"{bits[lv][0]:.3f} bits/code" in ax.get_title()


def test_rerun_with_fewer_samples_removes_the_extra_ones(tmp_path):
    write_gallery(tmp_path, *_inputs(4), sources=np.zeros((4, S, S, 3), np.uint8))
    out = write_gallery(tmp_path, *_inputs(2, seed=1))
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["sample_0000.png", "sample_0001.png"]
    assert not list((tmp_path / "sources").iterdir())
    with zipfile.ZipFile(out["zip"]) as zf:
        assert len(zf.namelist()) == 2 + 2 * 2
    assert not list(tmp_path.rglob("*.tmp-*"))


@pytest.mark.parametrize(
    "slot, change, match",
    [
        (0, lambda im: im.astype(np.float32), r"images has dtype float32; give uint8"),
        (0, lambda im: im[..., 0], r"images has shape \(5, 32, 32\); give \(N, S, S, 3\)"),
        (1, lambda c: {**c, "top": c["top"][:3]}, r"codes\['top'\] holds 3 grids but images holds 5"),
        (1, lambda c: {**c, "middle": c["middle"].astype(float)}, r"codes\['middle'\] has dtype float64"),
        (1, lambda c: {"top": c["top"]}, r"codes has keys \['top'\]; give a dict with exactly top, middle"),
        (2, lambda b: {**b, "bottom": b["bottom"][:2]}, r"bits\['bottom'\] .* shape \(2,\); give float"),
        (2, lambda b: {**b, "top": -b["top"]}, r"bits\['top'\] has non-finite or negative values"),
        (3, lambda s: list(s.items()), r"settings is a list; give a dict"),
    ],
)
def test_bad_input_names_what_to_fix(tmp_path, slot, change, match):
    args = list(_inputs())
    args[slot] = change(args[slot])
    with pytest.raises(ValueError, match=match):
        write_gallery(tmp_path, *args)
    assert not (tmp_path / "gallery.zip").exists()


def test_bad_keywords_name_what_to_fix(tmp_path):
    images, codes, bits, settings = _inputs()
    with pytest.raises(ValueError, match=r"sources holds 2 images but images holds 5"):
        write_gallery(tmp_path, images, codes, bits, settings, sources=images[:2])
    with pytest.raises(ValueError, match=r"titles must be a list of 5 strings"):
        write_gallery(tmp_path, images, codes, bits, settings, titles=["a"])
    with pytest.raises(ValueError, match=r"codes\['top'\] has index 15 but codebook_sizes\['top'\]=8"):
        write_gallery(tmp_path, images, codes, bits, settings, codebook_sizes={**K, "top": 8})


def test_offer_download_on_colab_starts_the_download(tmp_path, monkeypatch):
    target = tmp_path / "gallery.zip"
    target.write_bytes(b"zip")
    calls = []
    colab = types.ModuleType("google.colab")
    colab.files = types.SimpleNamespace(download=calls.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")  # Colab wins if both look present
    offer_download(target)
    assert calls == [str(target)]


def test_offer_download_on_kaggle_links_relative_to_the_working_dir(tmp_path, monkeypatch, capsys):
    from IPython.display import FileLink

    monkeypatch.setitem(sys.modules, "google.colab", None)  # makes the import fail, as off Colab
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "gallery.zip").write_bytes(b"zip")
    link = offer_download(tmp_path / "out" / "gallery.zip")
    assert isinstance(link, FileLink)
    assert link.path == str(Path("out") / "gallery.zip")
    assert "Output" in capsys.readouterr().out


def test_offer_download_without_ipython_prints_the_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    target = tmp_path / "x.png"
    target.write_bytes(b"png")
    assert offer_download(target) is None
    assert str(target) in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        offer_download(tmp_path / "missing.zip")
