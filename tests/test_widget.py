"""The reconstruction widget: its callbacks under ipywidgets 8 (in process) and 7.7.1 (Colab's,
in a subprocess), its layout and colours, and the PNG it writes where widgets cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ipywidgets7_check import check_widget, pixels, smoke_model_and_images

from hvq_utils import LEVELS, get_preset
from hvq_utils.widget import (
    NO_LEVEL,
    ReconstructionView,
    code_colours,
    reconstruction_view_png,
    reconstruction_widget,
    view_layout,
)

ROOT = Path(__file__).resolve().parents[1]
IPYWIDGETS7 = ROOT / ".venv" / "ipywidgets7"
IPYWIDGETS7_PIP = (
    ".venv/bin/pip install --no-deps --target .venv/ipywidgets7 ipywidgets==7.7.1 ipython_genutils==0.2.0"
)


@pytest.fixture(scope="module")
def model_and_images():
    return smoke_model_and_images()


def test_widget_callbacks_redraw_the_view_under_ipywidgets_8(model_and_images):
    import ipywidgets

    assert ipywidgets.__version__.startswith("8."), ipywidgets.__version__
    check_widget(*model_and_images)


def test_widget_callbacks_redraw_the_view_under_ipywidgets_7():
    if not (IPYWIDGETS7 / "ipywidgets").is_dir():
        pytest.fail(
            f"{IPYWIDGETS7} holds no ipywidgets 7.7.1; run `make test`, which installs it ({IPYWIDGETS7_PIP})"
        )
    env = dict(os.environ)
    paths = [str(IPYWIDGETS7), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "ipywidgets7_check.py")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert f"ipywidgets 7.7.1 from {IPYWIDGETS7}" in result.stdout, result.stdout
    assert "widget checks passed" in result.stdout


def test_png_fallback_holds_the_widgets_pixels(model_and_images, tmp_path):
    vq, images = model_and_images
    png, index, levels = check_widget(vq, images)
    path = reconstruction_view_png(vq, images, tmp_path / "view.png", index=index, levels=levels)
    assert np.array_equal(pixels(path.read_bytes()), pixels(png))


def test_without_a_kernel_the_widget_is_written_as_a_png(model_and_images, tmp_path):
    from IPython.display import Image as DisplayImage

    vq, images = model_and_images
    shown = reconstruction_widget(vq, images, tmp_path / "out" / "view.png")  # pytest: no kernel
    assert isinstance(shown, DisplayImage)
    written = (tmp_path / "out" / "view.png").read_bytes()
    assert shown.data == written
    expected, _ = ReconstructionView(vq, images).render(0, LEVELS)
    assert np.array_equal(pixels(written), expected)


def test_a_saved_kaggle_version_gets_the_png_and_a_live_kernel_the_widget(
    model_and_images, tmp_path, monkeypatch
):
    import IPython
    import ipywidgets

    vq, images = model_and_images

    class Shell:
        kernel = object()  # what a Jupyter, Colab or Kaggle kernel's shell has

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert isinstance(reconstruction_widget(vq, images, tmp_path / "a.png"), ipywidgets.VBox)
    assert not (tmp_path / "a.png").exists()
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert not isinstance(reconstruction_widget(vq, images, tmp_path / "b.png"), ipywidgets.VBox)
    assert (tmp_path / "b.png").is_file()


def test_all_levels_off_is_refused_with_a_message(model_and_images):
    view = ReconstructionView(*model_and_images)
    with pytest.raises(ValueError, match="Keep at least one level"):
        view.render(0, ())
    with pytest.raises(ValueError, match="unknown 'left'"):
        view.render(0, ("top", "left"))
    assert "at least one level" in NO_LEVEL


def test_images_of_another_size_are_refused(model_and_images):
    vq, images = model_and_images
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        ReconstructionView(vq, images[:, :16, :16])


@pytest.mark.parametrize("preset", ["smoke", "full"])
def test_layout_keeps_panels_and_maps_inside_and_apart(preset):
    config = get_preset(preset)
    layout = view_layout(config.image_size, config.grid_sizes)
    assert layout.boxes["original"][2] >= 256 and layout.boxes["original"][2] % config.image_size == 0
    taken = np.zeros((layout.height, layout.width), int)
    for name, (x, y, w, h) in layout.boxes.items():
        assert x >= 0 and y >= 0 and x + w <= layout.width and y + h <= layout.height, name
        taken[y : y + h, x : x + w] += 1
        if name in LEVELS:
            assert w == h and all(w % g == 0 for g in config.grid_sizes), (name, w)
    assert taken.max() == 1  # no two boxes overlap
    sides = {layout.boxes[level][2] for level in LEVELS}
    assert len(sides) == 1  # one common side for the three code maps


def test_code_colours_are_fixed_and_distinct():
    table = code_colours(512)
    assert table.dtype == np.uint8 and table.shape == (512, 3)
    assert np.array_equal(code_colours(64), table[:64])  # a code's colour does not depend on K
    assert len({tuple(c) for c in table[:64]}) == 64
    neighbours = np.abs(table[1:].astype(int) - table[:-1]).sum(axis=1)
    assert neighbours.min() > 60  # codes with near numbers look different
