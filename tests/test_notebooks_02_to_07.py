"""Notebooks 02 to 07 run end to end at the smoke preset, each on the previous one's output."""

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from hvq_utils import get_preset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from hvq_utils.prepare import prepare_images

    root = tmp_path_factory.mktemp("pipeline")
    src = root / "images"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        y, x = np.mgrid[0:48, 0:64] / 64.0
        img = np.stack([x * rng.uniform(0.2, 1), y * rng.uniform(0.2, 1), (x + y) / 2], -1)
        Image.fromarray((img * 255).astype("uint8")).save(src / f"img_{i}.png")
    prepare_images(src, root / "data", get_preset("smoke"), workers=1)
    return root


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_notebooks_02_to_07_run_in_sequence(prepared, notebook_runner):
    root = prepared
    smoke = {"PRESET": "smoke", "OVERRIDES": {}}
    nb = notebook_runner(
        "02_train_vqvae.ipynb", {"DATA": str(root / "data"), "OUT": str(root / "vqvae"), **smoke}, root
    )
    vq = _manifest(root / "vqvae")
    assert vq["steps"] == get_preset("smoke").steps
    assert set(vq["metrics"]["perplexity"]) == {"top", "middle", "bottom"}
    widget_outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in widget_outputs)

    params = {"DATA": str(root / "data"), "VQVAE": str(root / "vqvae"), "OUT": str(root / "codes")}
    notebook_runner("03_encode_latents.ipynb", {**params, "BATCH_SIZE": 4}, root)
    codes = _manifest(root / "codes")
    assert codes["inputs"]["vqvae"]["hash"] == vq["hash"]
    assert codes["images"]["train"] + codes["images"]["validation"] == 40
    assert codes["splits"]["train"] == 2 * codes["images"]["train"]  # FLIPS: the flipped codes too

    for num, level in (("04", "top"), ("05", "middle"), ("06", "bottom")):
        out = root / f"prior-{level}"
        params = {"CODES": str(root / "codes"), "OUT": str(out), **smoke}
        notebook_runner(f"{num}_train_{level}_prior.ipynb", params, root)
        prior = _manifest(out)
        assert prior["level"] == level and prior["steps"] == get_preset("smoke").prior_steps
        assert prior["inputs"]["codes"]["hash"] == codes["hash"]
        assert prior["metrics"]["bits_per_code"]["train"] > 0

    out = root / "samples"
    params = {
        "VQVAE": str(root / "vqvae"),
        **{
            name: str(root / f"prior-{level}")
            for name, level in (("TOP", "top"), ("MIDDLE", "middle"), ("BOTTOM", "bottom"))
        },
        "DATA": str(root / "data"),
        "OUT": str(out),
        "SOURCES": 2,
        **smoke,
    }
    notebook_runner("07_sample.ipynb", params, root)
    with zipfile.ZipFile(out / "new" / "gallery.zip") as z:
        names = z.namelist()
    assert "index.html" in names and sum(n.startswith("samples/") for n in names) == get_preset("smoke").n
    assert _manifest(out / "variations")["mode"] == "variations"
    assert _manifest(out / "inpainting")["mode"] == "inpaint"
    assert _manifest(out / "new")["inputs"]["vqvae"]["hash"] == vq["hash"]
