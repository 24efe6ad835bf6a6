"""The sample data that ships: random crops of the photographs inside scikit-image's wheel.

`prepare --src sample` writes them as JPEG files into a folder and prepares that folder
like any other, so the demo and the tests see real photographs without any download.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

# Real photographs that skimage.data loads from its own wheel, with no network (checked
# with scikit-image 0.22-0.26; lily, skin, eagle and the cell movies need a download).
PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "moon", "brick", "grass", "gravel", "coins", "clock",
    "text", "motorcycle_left", "motorcycle_right",
)


def load_photo(name: str) -> np.ndarray:
    """One of PHOTOS as uint8 (H, W, 3) for colour or (H, W) for grayscale."""
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(data, name)()


def make_sample_folder(
    dest: str | os.PathLike,
    seed: int = 0,
    count: int = 400,
    max_side: int = 256,
    min_side: int = 32,
) -> Path:
    """Write `count` random crops of PHOTOS as JPEG files into `dest`; returns `dest`.

    Crops have random positions, sizes (a quarter of the photo's short side up to all of
    it, and at least `min_side`) and aspect ratios (0.6 to 1.8, mostly wide, like whale
    photographs), are scaled down so the long side is at most `max_side`, and are the same
    for the same arguments. A finished folder is recognised (from `dest`.json) and reused.
    """
    dest = Path(dest)
    marker = dest.with_name(dest.name + ".json")
    params = {"seed": seed, "count": count, "max_side": max_side, "min_side": min_side}
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    photos = {name: load_photo(name) for name in PHOTOS}
    rng = np.random.default_rng(seed)
    for i in range(count):
        name = PHOTOS[rng.integers(len(PHOTOS))]
        photo = photos[name]
        h, w = photo.shape[:2]
        aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.8))))  # width / height
        ch = int(rng.uniform(0.25, 1.0) * min(h, w))
        cw = min(w, int(ch * aspect))
        ch, cw = max(ch, min_side), max(cw, min_side)
        top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        crop = Image.fromarray(photo[top : top + ch, left : left + cw])
        crop.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        crop.save(dest / f"{name}_{i:04d}.jpg", quality=92)
    marker.write_text(json.dumps(params))
    return dest
