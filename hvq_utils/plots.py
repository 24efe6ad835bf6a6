"""The notebooks' pictures: training curves, reconstructions, code maps, level ablations,
code histograms, and an interactive reconstruction widget. Each returns its matplotlib figure
(or widget) so a notebook shows it and a test can inspect it. The widget, drawn without
matplotlib, lives in hvq_utils/widget.py.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from hvq_utils.config import LEVELS
from hvq_utils.widget import reconstruction_widget  # noqa: F401  (notebooks call plots.reconstruction_widget)


def read_log(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """log.csv of a training run -> {column: float64 (N,)}, one row per checkpoint."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; train first (it is written at every checkpoint)")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] not in ("", "NA") else np.nan for r in rows]) for k in rows[0]}


def training_curves(run_dir: str | os.PathLike, metrics: tuple[str, ...]):
    """One panel per metric, train and validation against the step."""
    import matplotlib.pyplot as plt

    log = read_log(run_dir)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False)
    for ax, name in zip(axes[0], metrics, strict=True):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in log and np.isfinite(log[key]).any():
                ax.plot(log["step"], log[key], marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    return fig


def _show_row(axes, images: np.ndarray, title: str) -> None:
    for i, ax in enumerate(axes):
        ax.imshow(np.clip(images[i], 0.0, 1.0))
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(title)


def reconstructions(vq, images: np.ndarray):
    """Originals over reconstructions. images: float32 (B, S, S, 3) in [0, 1]."""
    import matplotlib.pyplot as plt

    recon = np.asarray(vq.reconstruct(images))
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.2), squeeze=False)
    _show_row(axes[0], images, "original")
    _show_row(axes[1], recon, "reconstruction")
    fig.tight_layout()
    return fig


def ablations(vq, images: np.ndarray):
    """Rows: originals, then decodes from each level alone and from all three.

    Shows what each level carries (see VQVAE.reconstruct for how a level is ablated).
    """
    import matplotlib.pyplot as plt

    rows = [("original", images)]
    for levels in (("top",), ("middle",), ("bottom",), ("top", "middle"), LEVELS):
        rows.append(("+".join(levels), np.asarray(vq.reconstruct(images, levels=levels))))
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(2 * n, 2.1 * len(rows)), squeeze=False)
    for ax_row, (title, imgs) in zip(axes, rows, strict=True):
        _show_row(ax_row, imgs, title)
    fig.tight_layout()
    return fig


def code_maps(vq, image: np.ndarray):
    """An image and its three code grids. image: float32 (S, S, 3) in [0, 1]."""
    import matplotlib.pyplot as plt

    codes = {k: np.asarray(v)[0] for k, v in vq.encode(image[None]).items()}
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    axes[0].imshow(np.clip(image, 0, 1))
    axes[0].set_title("image")
    for ax, level in zip(axes[1:], LEVELS, strict=True):
        im = ax.imshow(codes[level], cmap="nipy_spectral", interpolation="nearest")
        ax.set_title(f"{level} codes {codes[level].shape[0]}x{codes[level].shape[1]}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def code_histograms(histograms: dict[str, list[int]]):
    """Bar chart of code frequencies per level, sorted, as `encode` records them."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3))
    for ax, level in zip(axes, LEVELS, strict=True):
        counts = np.sort(np.asarray(histograms[level]))[::-1]
        used = int((counts > 0).sum())
        ax.bar(np.arange(len(counts)), counts, width=1.0)
        ax.set_title(f"{level}: {used} of {len(counts)} codes used")
        ax.set_xlabel("code (by frequency)")
    fig.tight_layout()
    return fig


def preview_batch(data_dir: str | os.PathLike, n: int = 8) -> np.ndarray:
    """The first `n` prepared images (validation if there is any): float32 (n, S, S, 3)."""
    from hvq_utils.data import image_dataset
    from hvq_utils.manifest import read_manifest

    splits = read_manifest(data_dir, "prepare")["splits"]
    split = "validation" if splits.get("validation", 0) >= n else "train"
    return next(image_dataset(data_dir, split, n, training=False).as_numpy_iterator())


def sample_pairs(gallery_dir: str | os.PathLike, n: int = 8):
    """Sources above their samples, from a gallery written with sources (stage 07's variations
    and inpainting): the first `n` in rank order."""
    import matplotlib.pyplot as plt
    from PIL import Image

    gallery_dir = Path(gallery_dir)
    samples = sorted((gallery_dir / "samples").glob("sample_*.png"))[:n]
    if not samples:
        raise FileNotFoundError(f"{gallery_dir}/samples holds no sample; run the sampling stage first")
    fig, axes = plt.subplots(2, len(samples), figsize=(2 * len(samples), 4.4), squeeze=False)
    for i, path in enumerate(samples):
        source = gallery_dir / "sources" / path.name.replace("sample_", "source_")
        for ax, image, title in ((axes[0, i], source, "source"), (axes[1, i], path, f"rank {i}")):
            ax.imshow(np.asarray(Image.open(image)))
            ax.set_title(title)
            ax.axis("off")
    return fig
