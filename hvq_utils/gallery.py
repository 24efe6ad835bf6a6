"""The sampling stage's output as a folder a browser opens and a zip a user downloads.

    out = write_gallery("runs/samples", images, codes, bits, settings)
    offer_download(out["zip"])

The folder holds every sample as a lossless PNG, a contact sheet, one figure per sample
with its three code maps, and an `index.html` that links them by relative paths, so the
page works from disk with no server, both in the folder and unzipped from `gallery.zip`.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hvq_utils.config import LEVELS
from hvq_utils.manifest import atomic_write_bytes

ZIP_NAME = "gallery.zip"
CODE_CMAP = "nipy_spectral"  # the colormap plots.code_maps uses, so figures read the same
# Files of earlier runs that this one may delete when it writes fewer samples.
_OWNED = re.compile(r"^(samples/sample|sources/source|codes/sample)_\d+\.png$")
# A fixed time stamp keeps the zip the same bytes for the same content.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _check_images(name: str, images, n: int | None = None) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{name} is a {type(images).__name__}; give a numpy uint8 array (N, S, S, 3)")
    if images.dtype != np.uint8:
        raise ValueError(
            f"{name} has dtype {images.dtype}; give uint8 pixels in 0..255 (N, S, S, 3), "
            "e.g. np.clip(x * 255, 0, 255).round().astype(np.uint8)"
        )
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or not len(images):
        raise ValueError(f"{name} has shape {images.shape}; give (N, S, S, 3) with N >= 1, square RGB")
    if n is not None and images.shape[0] != n:
        raise ValueError(f"{name} holds {images.shape[0]} images but images holds {n}; give one per sample")
    return images


def _check_levels(name: str, d) -> None:
    if not isinstance(d, Mapping) or set(d) != set(LEVELS):
        keys = sorted(d) if isinstance(d, Mapping) else type(d).__name__
        raise ValueError(f"{name} has keys {keys}; give a dict with exactly {', '.join(LEVELS)}")


def _check_codes(codes, n: int, codebook_sizes) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    _check_levels("codes", codes)
    out, sizes = {}, {}
    for level in LEVELS:
        c = codes[level]
        if not isinstance(c, np.ndarray) or not np.issubdtype(c.dtype, np.integer):
            kind = c.dtype if isinstance(c, np.ndarray) else type(c).__name__
            raise ValueError(
                f"codes[{level!r}] has dtype {kind}; give an integer array (N, g, g) of code indices"
            )
        if c.ndim != 3 or c.shape[1] != c.shape[2] or c.shape[1] < 1:
            raise ValueError(
                f"codes[{level!r}] has shape {c.shape}; give (N, g, g), one square grid per sample"
            )
        if c.shape[0] != n:
            raise ValueError(
                f"codes[{level!r}] holds {c.shape[0]} grids but images holds {n}; give one per sample"
            )
        if c.min() < 0:
            raise ValueError(
                f"codes[{level!r}] has negative index {int(c.min())}; give codebook indices 0..K-1"
            )
        k = int(c.max()) + 1 if codebook_sizes is None else codebook_sizes[level]
        if c.max() >= k:
            raise ValueError(
                f"codes[{level!r}] has index {int(c.max())} but codebook_sizes[{level!r}]={k}; "
                "give the codebook sizes the VQ-VAE was trained with"
            )
        out[level], sizes[level] = c, k
    return out, sizes


def _check_codebook_sizes(codebook_sizes) -> dict[str, int] | None:
    if codebook_sizes is None:
        return None
    _check_levels("codebook_sizes", codebook_sizes)
    for level in LEVELS:
        k = codebook_sizes[level]
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(
                f"codebook_sizes[{level!r}]={k!r}; give a positive int, the level's codebook size K"
            )
    return {level: int(codebook_sizes[level]) for level in LEVELS}


def _check_bits(bits, n: int) -> dict[str, np.ndarray]:
    _check_levels("bits", bits)
    out = {}
    for level in LEVELS:
        b = np.asarray(bits[level])
        if b.dtype == bool or not np.issubdtype(b.dtype, np.number) or b.shape != (n,):
            raise ValueError(
                f"bits[{level!r}] has dtype {b.dtype} and shape {b.shape}; give float ({n},), "
                "bits per code for each sample"
            )
        if not np.isfinite(b).all() or (b < -1e-6).any():
            raise ValueError(
                f"bits[{level!r}] has non-finite or negative values; give the negative log-likelihood "
                "in bits per code (>= 0, lower = more likely)"
            )
        out[level] = b.astype(np.float64)
    return out


def contact_sheet(
    images: np.ndarray, columns: int | None = None, gap: int = 4, max_width: int = 2048
) -> np.ndarray:
    """All images in a grid on white, ranked left to right then top to bottom.

    images: uint8 (N, S, S, 3). columns: tiles per row, ceil(sqrt(N)) by default (a roughly
    square sheet); more than N is cut to N. gap: white pixels between tiles and around the
    edge. Tiles are downscaled (keeping aspect) so the sheet is at most `max_width` wide.
    Returns uint8 (rows * t + (rows + 1) * gap, columns * t + (columns + 1) * gap, 3), t the tile side.
    """
    images = _check_images("images", images)
    n, side = images.shape[0], images.shape[1]
    if columns is None:
        columns = math.ceil(math.sqrt(n))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns={columns!r}; give a positive int or None for a roughly square sheet")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
        raise ValueError(f"gap={gap!r}; give a non-negative int of pixels")
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    tile = min(side, (max_width - (columns + 1) * gap) // columns)
    if tile < 1:
        raise ValueError(
            f"max_width={max_width} leaves no room for {columns} columns with gap={gap}; "
            "raise max_width or lower columns or gap"
        )
    sheet = np.full((rows * tile + (rows + 1) * gap, columns * tile + (columns + 1) * gap, 3), 255, np.uint8)
    for i, image in enumerate(images):
        if tile != side:
            image = np.asarray(Image.fromarray(image).resize((tile, tile), Image.Resampling.LANCZOS))
        r, c = divmod(i, columns)
        y, x = gap + r * (tile + gap), gap + c * (tile + gap)
        sheet[y : y + tile, x : x + tile] = image
    return sheet


def _mpl_text(s: str) -> str:
    # An even number of "$" would switch matplotlib to mathtext and can fail to parse.
    return s.replace("$", r"\$")


def code_figure(
    image: np.ndarray,
    codes: Mapping[str, np.ndarray],
    bits: Mapping[str, float],
    codebook_sizes: Mapping[str, int],
    title: str | None = None,
):
    """A sample and its three code maps side by side, each titled with its bits per code.

    image: uint8 (S, S, 3); codes: {level: int (g, g)}; bits: {level: float}; codebook_sizes:
    {level: K}, so each map is coloured with the fixed colormap over 0..K-1 and a code keeps
    its colour across samples. Returns a matplotlib Figure on the Agg canvas (no pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    axes[0].imshow(image)
    axes[0].set_title("sample")
    for ax, level in zip(axes[1:], LEVELS, strict=True):
        grid = np.asarray(codes[level])
        im = ax.imshow(grid, cmap=CODE_CMAP, vmin=0, vmax=codebook_sizes[level] - 1, interpolation="nearest")
        ax.set_title(f"{level} {grid.shape[0]}x{grid.shape[1]}: {float(bits[level]):.3f} bits/code")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(_mpl_text(title))
    fig.tight_layout()
    return fig


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _setting_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.settings td { max-width: 48em; word-break: break-all; }
img.sample { width: 256px; image-rendering: auto; }
img.sheet { max-width: 100%; }
"""


def _image_cell(rel: str, alt: str) -> str:
    rel, alt = html.escape(rel), html.escape(alt)
    return f'<td><a href="{rel}"><img class="sample" src="{rel}" alt="{alt}"></a></td>'


def _index_html(
    n: int,
    grids: dict[str, int],
    bits: dict[str, np.ndarray],
    totals: np.ndarray,
    settings: Mapping,
    titles: list[str] | None,
    has_sources: bool,
) -> str:
    e = html.escape
    head = ["#"] + (["title"] if titles else []) + (["source"] if has_sources else []) + ["sample"]
    head += [f"{level} ({g}x{g}) bits/code" for level, g in grids.items()] + ["total bits", "codes"]
    rows = []
    for i in range(n):
        cells = [f"<td class=num>{i + 1}</td>"]
        if titles:
            cells.append(f"<td>{e(titles[i])}</td>")
        if has_sources:
            cells.append(_image_cell(f"sources/source_{i:04d}.png", f"source {i + 1}"))
        cells.append(_image_cell(f"samples/sample_{i:04d}.png", f"sample {i + 1}"))
        cells += [f"<td class=num>{bits[level][i]:.3f}</td>" for level in LEVELS]
        cells.append(f"<td class=num>{totals[i]:.1f}</td>")
        cells.append(f'<td><a href="{e(f"codes/sample_{i:04d}.png")}">code maps</a></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    settings_rows = [
        f"<tr><th>{e(str(k))}</th><td>{e(_setting_text(v))}</td></tr>" for k, v in settings.items()
    ] or ["<tr><td>(none recorded)</td></tr>"]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>hvq samples ({n})</title><style>{_CSS}</style></head><body>",
            f"<h1>{n} samples</h1>",
            "<p>Ranked in the order the sampler gave. Bits per code: the negative log-likelihood of a "
            "level's codes under its prior, in bits per code (lower = more likely). Total bits: the "
            "whole sample's, bits per code times codes, summed over the levels.</p>",
            '<h2>Settings</h2><table class="settings">',
            *settings_rows,
            "</table>",
            '<h2>Contact sheet</h2><a href="contact_sheet.png">'
            '<img class="sheet" src="contact_sheet.png" alt="contact sheet"></a>',
            '<h2>Samples</h2><table class="samples"><thead><tr>',
            "".join(f"<th>{e(h)}</th>" for h in head),
            "</tr></thead><tbody>",
            *rows,
            "</tbody></table></body></html>",
            "",
        ]
    )


def _zip_bytes(out_dir: Path, files: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel in files:
            info = zipfile.ZipInfo(rel, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            # PNGs are compressed already; deflating them again only costs time.
            info.compress_type = zipfile.ZIP_STORED if rel.endswith(".png") else zipfile.ZIP_DEFLATED
            zf.writestr(info, (out_dir / rel).read_bytes())
    return buf.getvalue()


def write_gallery(
    out_dir: str | os.PathLike,
    images: np.ndarray,
    codes: Mapping[str, np.ndarray],
    bits: Mapping[str, np.ndarray],
    settings: Mapping,
    *,
    titles: Sequence[str] | None = None,
    sources: np.ndarray | None = None,
    codebook_sizes: Mapping[str, int] | None = None,
) -> dict:
    """Write the samples, a contact sheet, code-map figures, index.html and gallery.zip.

    images: uint8 (N, S, S, 3), ranked (the contact sheet and page keep this order).
    codes: {"top": int (N, gt, gt), "middle": int (N, gm, gm), "bottom": int (N, gb, gb)}.
    bits: {level: float (N,)}, negative log-likelihood in bits per code (lower = more likely).
    settings: the run's settings to show (temperature, top_k, seed, input hashes, ...).
    titles: N label strings. sources: uint8 (N, S, S, 3) shown beside each sample (variations,
    inpainting). codebook_sizes: {level: K}; colours span 0..K-1 (default: the largest code + 1).

    Every file is written atomically; a re-run replaces the last one's files, including
    samples beyond the new N. Returns {"files": [paths relative to out_dir, as in the zip],
    "zip": Path of gallery.zip, "contact_sheet": Path of contact_sheet.png}.
    """
    images = _check_images("images", images)
    n = images.shape[0]
    codes, sizes = _check_codes(codes, n, _check_codebook_sizes(codebook_sizes))
    bits = _check_bits(bits, n)
    if not isinstance(settings, Mapping):
        raise ValueError(f"settings is a {type(settings).__name__}; give a dict of the run's settings")
    if titles is not None:
        if isinstance(titles, str) or not isinstance(titles, Sequence) or len(titles) != n:
            raise ValueError(f"titles must be a list of {n} strings, one per sample; got {titles!r:.80}")
        titles = [str(t) for t in titles]
    if sources is not None:
        sources = _check_images("sources", sources, n)

    out = Path(out_dir)
    for sub in ("samples", "codes") + (("sources",) if sources is not None else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    files: list[str] = ["index.html", "contact_sheet.png"]

    def put(rel: str, data: bytes) -> None:
        atomic_write_bytes(out / rel, data)
        if rel not in files:
            files.append(rel)

    for i in range(n):
        put(f"samples/sample_{i:04d}.png", _png(images[i]))
        if sources is not None:
            put(f"sources/source_{i:04d}.png", _png(sources[i]))
        fig = code_figure(
            images[i],
            {level: codes[level][i] for level in LEVELS},
            {level: bits[level][i] for level in LEVELS},
            sizes,
            titles[i] if titles else None,
        )
        put(f"codes/sample_{i:04d}.png", _figure_png(fig))
    put("contact_sheet.png", _png(contact_sheet(images)))
    grids = {level: codes[level].shape[1] for level in LEVELS}
    totals = sum(bits[level] * grids[level] ** 2 for level in LEVELS)
    page = _index_html(n, grids, bits, totals, settings, titles, sources is not None)
    put("index.html", page.encode("utf-8"))

    for stale in sorted(out.glob("*/*.png")):
        rel = stale.relative_to(out).as_posix()
        if _OWNED.match(rel) and rel not in files:
            stale.unlink()
    atomic_write_bytes(out / ZIP_NAME, _zip_bytes(out, files))
    return {"files": files, "zip": out / ZIP_NAME, "contact_sheet": out / "contact_sheet.png"}


def offer_download(path: str | os.PathLike) -> object:
    """Offer a file for download from a notebook; returns what the notebook should display.

    Colab: starts the browser download (returns None). Kaggle: returns an IPython FileLink
    relative to the working directory, and says the file is also in the notebook's Output.
    Elsewhere: a FileLink when IPython is there, else the path is printed (returns None).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it first (e.g. with write_gallery)")
    try:
        from google.colab import files
    except ImportError:
        files = None
    if files is not None:
        return files.download(str(path))
    rel = os.path.relpath(path.resolve(), Path.cwd().resolve())
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        from IPython.display import FileLink

        if rel.startswith(".."):
            print(f"{path} is outside the working directory, so it is not saved with the notebook's Output")
        else:
            print(f"{rel} is also in this notebook's Output (Save Version keeps it)")
        return FileLink(rel)
    try:
        from IPython.display import FileLink
    except ImportError:
        print(path)
        return None
    return FileLink(rel)
