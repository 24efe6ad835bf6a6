"""Notebook 01 runs end to end at the smoke preset on a small folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def test_notebook_01_prepares_a_folder(tmp_path, notebook_runner, monkeypatch):
    # Jupyter's inline backend (not the tests' default Agg), so the grid becomes an output.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    src = tmp_path / "images"
    (src / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / "train" / f"whale_{i:02d}.jpg")
    (src / "train" / "broken.jpg").write_text("not a picture")
    (src / "train.csv").write_text("Image,Id\n")
    out = tmp_path / "data"

    params = {"SRC": str(src), "OUT": str(out), "PRESET": "smoke", "OVERRIDES": {}, "WORKERS": None}
    nb = notebook_runner("01_prepare_data.ipynb", params, tmp_path)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"found": 13, "written": 12, "rejected": 1, "ignored": 1}
    assert manifest["settings"]["data"]["image_size"] == 32
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grid of prepared images
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "train/broken.jpg" in html and "not an image" in html
    # The stage's summary line reaches the notebook (logging is configured by the set-up cell).
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert "prepare: found 13 images = 12 written + 1 rejected" in stdout
