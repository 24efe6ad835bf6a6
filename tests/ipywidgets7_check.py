"""Drive the reconstruction widget's callbacks and check every redraw.

test_widget.py runs `check_widget` in process (ipywidgets 8, the venv's) and this file as a
script under ipywidgets 7.7.1 (Colab's), with PYTHONPATH=.venv/ipywidgets7:

    PYTHONPATH=.venv/ipywidgets7 python tests/ipywidgets7_check.py

The script exits non-zero on the first failed check and prints the ipywidgets version it ran.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from hvq_utils import LEVELS, get_preset


def smoke_model_and_images(n: int = 3):
    """A smoke-preset VQ-VAE whose untrained decoder output spans [0, 1] (its last convolution
    scaled up and biased to grey, so that dropping a level visibly changes the picture), and
    n smooth 32x32 images: float32 (n, 32, 32, 3) in [0, 1]."""
    from hvq_utils.vqvae import build_vqvae

    config = get_preset("smoke")
    vq = build_vqvae(config)
    to_rgb = vq.trunk.get_layer("to_rgb")
    to_rgb.kernel.assign(np.asarray(to_rgb.kernel) * 20.0)
    to_rgb.bias.assign(np.full(to_rgb.bias.shape, 0.5, np.float32))
    size = config.image_size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        noise = 0.1 * rng.random(x.shape)
        images.append(np.stack([x * rng.uniform(0.3, 1), y * rng.uniform(0.3, 1), (x + y) / 2 + noise], -1))
    return vq, np.clip(np.array(images), 0, 1).astype(np.float32)


def find(box, kind, description: str | None = None):
    """The one widget of class `kind` (and `description`) in the tree under `box`."""
    found = []

    def walk(w):
        if isinstance(w, kind) and (description is None or w.description == description):
            found.append(w)
        for child in getattr(w, "children", ()):
            walk(child)

    walk(box)
    assert len(found) == 1, f"expected one {kind.__name__} {description or ''}, found {len(found)}"
    return found[0]


def pixels(png: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, 3); fails unless they are a PNG."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG", image.format
    return np.asarray(image.convert("RGB"))


def _u8(images) -> np.ndarray:
    return np.round(np.clip(np.asarray(images), 0.0, 1.0) * 255.0).astype(np.uint8)


def check_view(vq, images: np.ndarray, png: bytes, label: str, index: int, levels: tuple[str, ...]) -> None:
    """The picture and summary show image `index` decoded from `levels`, checked against the
    model's own `encode` and `reconstruct`."""
    from hvq_utils.vqvae import psnr_db
    from hvq_utils.widget import code_colours, view_layout

    config = vq.config
    layout = view_layout(config.image_size, config.grid_sizes)
    view = pixels(png)
    assert view.shape == (layout.height, layout.width, 3), (view.shape, layout)

    def box(name):
        x, y, w, h = layout.boxes[name]
        return view[y : y + h, x : x + w]

    s = layout.scale
    original = np.repeat(np.repeat(_u8(images[index]), s, axis=0), s, axis=1)
    assert np.array_equal(box("original"), original), f"the original panel is not image {index}"
    expected = np.asarray(vq.reconstruct(images[index : index + 1], levels=levels))[0]
    upscaled = np.repeat(np.repeat(_u8(expected), s, axis=0), s, axis=1).astype(int)
    worst = np.abs(box("reconstruction").astype(int) - upscaled).max()
    assert worst <= 1, f"the reconstruction panel differs from reconstruct(levels={levels}) by {worst}"

    codes = {k: np.asarray(v)[0] for k, v in vq.encode(images[index : index + 1]).items()}
    for level, q in zip(LEVELS, vq.quantizers, strict=True):
        f = layout.boxes[level][2] // codes[level].shape[0]
        coloured = np.repeat(np.repeat(code_colours(q.num_codes)[codes[level]], f, axis=0), f, axis=1)
        assert np.array_equal(box(level), coloured) == (level in levels), f"{level} map, levels={levels}"

    mse = np.mean((expected - images[index]) ** 2, dtype=np.float32)
    psnr = float(np.asarray(psnr_db(np.array([mse], np.float32)))[0])
    match = re.fullmatch(rf"image {index}: PSNR (-?[0-9.]+) dB from {re.escape('+'.join(levels))}(.*)", label)
    assert match, f"summary {label!r} does not name image {index}, its PSNR and {levels}"
    assert abs(float(match.group(1)) - psnr) <= 0.006, (label, psnr)
    for level in LEVELS:
        assert (f"{level}" in match.group(2)) == (level not in levels), (label, levels)


def check_widget(vq, images: np.ndarray) -> tuple[bytes, int, tuple[str, ...]]:
    """Build the widget, drive its slider and checkboxes, check every redraw, and return the
    last picture's PNG bytes with its image index and levels."""
    import ipywidgets as widgets

    from hvq_utils.widget import NO_LEVEL, build_widget

    encodes = []
    code_model = vq.code_model()
    predict = code_model.predict_on_batch

    def counting(batch):
        encodes.append(len(batch))
        return predict(batch)

    code_model.predict_on_batch = counting
    try:
        box = build_widget(vq, images)
        slider = find(box, widgets.IntSlider)
        boxes = {level: find(box, widgets.Checkbox, level) for level in LEVELS}
        picture = find(box, widgets.Image)
        summary = find(box, widgets.Label)
        assert picture.format == "png" and slider.max == len(images) - 1
        check_view(vq, images, picture.value, summary.value, 0, LEVELS)

        steps = [
            (lambda: setattr(boxes["middle"], "value", False), 0, ("top", "bottom")),
            (lambda: setattr(slider, "value", 2), 2, ("top", "bottom")),
            (lambda: setattr(boxes["top"], "value", False), 2, ("bottom",)),
        ]
        for act, index, levels in steps:
            before = picture.value
            act()
            assert picture.value != before, f"the picture did not change for image {index}, {levels}"
            check_view(vq, images, picture.value, summary.value, index, levels)

        before = picture.value
        boxes["bottom"].value = False  # all three off: refused in the summary, picture kept
        assert summary.value == NO_LEVEL and picture.value == before
        boxes["bottom"].value = True
        check_view(vq, images, picture.value, summary.value, 2, ("bottom",))
        assert encodes == [1, 1], f"the encoder ran {len(encodes)} times for 2 images"
        return picture.value, slider.value, ("bottom",)
    finally:
        code_model.predict_on_batch = predict


if __name__ == "__main__":
    import ipywidgets

    print(f"ipywidgets {ipywidgets.__version__} from {ipywidgets.__file__}")
    check_widget(*smoke_model_and_images())
    print("widget checks passed")
