"""The reconstruction view of notebook 02: one image, its reconstruction from the levels kept,
its three code maps and its PSNR, as one RGB picture.

    view = ReconstructionView(vq, images)     # images: float32 (N, S, S, 3) in [0, 1]
    pixels, psnr = view.render(2, ("top", "bottom"))   # uint8 (H, W, 3), dB
    box = build_widget(vq, images)            # ipywidgets 7.7 (Colab) or 8: slider, 3 checkboxes
    reconstruction_view_png(vq, images, "view.png", index=2, levels=("top",))

The picture is composed with numpy and PIL, and the widget swaps the PNG bytes of one
`ipywidgets.Image`: a redraw decodes once and encodes a PNG, with no matplotlib figure.
The encoder runs once per image (its codes are cached), so switching levels only decodes.

Layout, top to bottom: labels; original | reconstruction, upscaled by a whole factor to at
least MIN_PANEL pixels; labels; the top, middle and bottom code maps, each code a fixed colour
(`code_colours`), upscaled to one common side, a level switched off greyed out; a caption with
the image index, the PSNR and the levels switched off. `view_layout` gives every box.

A level switched off is decoded from its codebook's usage-weighted mean vector, as
`VQVAE.reconstruct` ablates it. All three off is refused: the picture would show no image.
"""

from __future__ import annotations

import colorsys
import functools
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hvq_utils.config import LEVELS

log = logging.getLogger(__name__)

MIN_PANEL = 256  # smallest side of the original and reconstruction panels, pixels
GAP = 8  # pixels between panels
BACKGROUND = 255
OFF_GREY = 200  # a level switched off: its code map blended towards this grey
NO_LEVEL = (
    "Keep at least one level: with all three switched off the decoder sees only the codebooks' "
    "mean vectors, which carry nothing of the image."
)


@dataclass(frozen=True)
class ViewLayout:
    """Sizes and boxes of the view, in pixels. boxes: name -> (x, y, width, height) for
    "original", "reconstruction" and each level's code map; labels: name -> (x, y) of the text
    above each box, and "caption" for the line below the code maps."""

    width: int
    height: int
    scale: int  # the panels' whole upscaling factor
    font_size: int
    boxes: dict[str, tuple[int, int, int, int]]
    labels: dict[str, tuple[int, int]]


def view_layout(image_size: int, grid_sizes: tuple[int, ...]) -> ViewLayout:
    """The layout for images of side `image_size` and code grids `grid_sizes` (top first)."""
    scale = -(-MIN_PANEL // image_size)  # ceil: small presets are magnified, 512 is not
    panel = image_size * scale
    width = 2 * panel + GAP
    font_size = max(12, width // 64)
    line = font_size + 8
    # One tile side for all three maps, a multiple of every grid so each code is a square.
    finest = max(grid_sizes)
    tile = finest * max(1, (width - 2 * GAP) // 3 // finest)
    maps_x = (width - (3 * tile + 2 * GAP)) // 2
    maps_y = line + panel + GAP + line
    boxes = {"original": (0, line, panel, panel), "reconstruction": (panel + GAP, line, panel, panel)}
    for i, level in enumerate(LEVELS):
        boxes[level] = (maps_x + i * (tile + GAP), maps_y, tile, tile)
    labels = {name: (x + 2, y - line + 4) for name, (x, y, _, _) in boxes.items()}
    labels["caption"] = (2, maps_y + tile + 4)
    height = maps_y + tile + line + 4
    return ViewLayout(width, height, scale, font_size, boxes, labels)


def code_colours(num_codes: int) -> np.ndarray:
    """A fixed colour per code: uint8 (num_codes, 3).

    Hues step by the golden ratio, so codes with near numbers get far hues; saturation and
    brightness alternate, so the few hues that come close again still differ.
    """
    rgb = [
        colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.85 - 0.35 * (k % 2), 0.95 - 0.3 * (k // 2 % 2))
        for k in range(num_codes)
    ]
    return np.round(np.array(rgb) * 255).astype(np.uint8)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """float (..., 3) in [0, 1] -> uint8, rounded to the nearest of 256 levels."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor: (H, W, ...) -> (H * f, W * f, ...)."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable since Pillow 10.1
    except TypeError:
        return ImageFont.load_default()


def _check_levels(levels) -> tuple[str, ...]:
    unknown = [level for level in levels if level not in LEVELS]
    if unknown:
        raise ValueError(f"levels={tuple(levels)!r} has unknown {unknown[0]!r}; use some of {LEVELS}")
    if not levels:
        raise ValueError(NO_LEVEL)
    return tuple(level for level in LEVELS if level in levels)


def compose_view(
    original: np.ndarray,
    reconstruction: np.ndarray,
    codes: dict[str, np.ndarray],
    codebook_sizes: tuple[int, ...],
    levels: tuple[str, ...],
    caption: str,
) -> np.ndarray:
    """The view as pixels: uint8 (H, W, 3), H and W from `view_layout`.

    original, reconstruction: float32 (S, S, 3) in [0, 1]; codes: {level: int (g, g)};
    codebook_sizes: codes per level, top first (they fix the colour tables); levels: those kept.
    """
    levels = _check_levels(levels)
    layout = view_layout(original.shape[0], tuple(codes[level].shape[0] for level in LEVELS))
    view = np.full((layout.height, layout.width, 3), BACKGROUND, np.uint8)

    def paste(name: str, pixels: np.ndarray) -> None:
        x, y, w, h = layout.boxes[name]
        view[y : y + h, x : x + w] = pixels

    paste("original", _upscale(_to_uint8(original), layout.scale))
    paste("reconstruction", _upscale(_to_uint8(reconstruction), layout.scale))
    texts = {"original": "original", "reconstruction": f"reconstruction from {'+'.join(levels)}"}
    for level, size in zip(LEVELS, codebook_sizes, strict=True):
        grid = codes[level]
        tile = code_colours(size)[grid]  # (g, g, 3)
        if level in levels:
            texts[level] = f"{level} {grid.shape[0]}x{grid.shape[1]}: {len(np.unique(grid))} codes"
        else:
            tile = np.round(0.3 * tile + 0.7 * OFF_GREY).astype(np.uint8)
            texts[level] = f"{level} {grid.shape[0]}x{grid.shape[1]}: off"
        paste(level, _upscale(tile, layout.boxes[level][2] // grid.shape[0]))
    texts["caption"] = caption

    canvas = Image.fromarray(view)
    draw = ImageDraw.Draw(canvas)
    font = _font(layout.font_size)
    for name, text in texts.items():
        draw.text(layout.labels[name], text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG file bytes (fast compression: the widget sends one per redraw)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class ReconstructionView:
    """Renders the view of one image for a set of levels kept; the encoder runs once per image.

    vq: a built VQVAE; images: float32 (N, S, S, 3) in [0, 1], S = vq.config.image_size.
    """

    def __init__(self, vq, images: np.ndarray):
        import keras

        images = np.asarray(images, np.float32)
        size = vq.config.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or len(images) == 0:
            raise ValueError(
                f"images have shape {images.shape} but this VQ-VAE takes (N, {size}, {size}, 3) "
                f"with N >= 1 (image_size={size}); pass a batch such as plots.preview_batch gives"
            )
        self.vq = vq
        self.images = images
        self.codebook_sizes = tuple(q.num_codes for q in vq.quantizers)
        # Codebooks and mean vectors as the model holds them now: float32 (K, D) and (D,).
        self._vectors = [np.asarray(q.vectors()) for q in vq.quantizers]
        self._means = [np.asarray(q.mean_vector()) for q in vq.quantizers]
        self._codes: dict[int, dict[str, np.ndarray]] = {}
        # One compiled decoder for every choice of levels: it takes latents, not codes.
        latents = [
            keras.Input((g, g, v.shape[1])) for g, v in zip(vq.config.grid_sizes, self._vectors, strict=True)
        ]  # per level (g, g, D)
        self._decoder = keras.Model(latents, vq._decode_latents(latents), name="view_decoder")

    def codes(self, index: int) -> dict[str, np.ndarray]:
        """The codes of image `index`: {level: int32 (g, g)}, encoded on first use only."""
        if not 0 <= index < len(self.images):
            raise IndexError(f"image index {index} is out of range; there are {len(self.images)} images")
        if index not in self._codes:
            codes = self.vq.code_model().predict_on_batch(self.images[index : index + 1])
            self._codes[index] = {level: np.asarray(codes[level])[0] for level in LEVELS}
        return self._codes[index]

    def reconstruct(self, index: int, levels: tuple[str, ...] = LEVELS) -> np.ndarray:
        """Image `index` decoded from `levels` only: float32 (S, S, 3) in [0, 1]."""
        levels = _check_levels(levels)
        codes = self.codes(index)
        latents = [
            vectors[codes[level]][None] if level in levels else np.broadcast_to(mean, (1, g, g, len(mean)))
            for level, vectors, mean, g in zip(
                LEVELS, self._vectors, self._means, self.vq.config.grid_sizes, strict=True
            )
        ]  # per level (1, g, g, D)
        return np.asarray(self._decoder.predict_on_batch(latents))[0]

    def render(self, index: int, levels: tuple[str, ...] = LEVELS) -> tuple[np.ndarray, float]:
        """The view of image `index` decoded from `levels`: (uint8 (H, W, 3), PSNR in dB)."""
        from hvq_utils.vqvae import psnr_db

        levels = _check_levels(levels)
        original = self.images[index]
        reconstruction = self.reconstruct(index, levels)
        mse = np.mean((reconstruction - original) ** 2, dtype=np.float32)
        psnr = float(np.asarray(psnr_db(np.array([mse], np.float32)))[0])
        off = [level for level in LEVELS if level not in levels]
        caption = f"image {index}   PSNR {psnr:.2f} dB   off: {', '.join(off) or 'none'}"
        codes = self.codes(index)
        return compose_view(original, reconstruction, codes, self.codebook_sizes, levels, caption), psnr


def describe(index: int, levels: tuple[str, ...], psnr: float) -> str:
    """The widget's one-line summary of a view."""
    off = [level for level in LEVELS if level not in levels]
    return f"image {index}: PSNR {psnr:.2f} dB from {'+'.join(levels)}" + (
        f" ({', '.join(off)} off: decoded from the codebook's mean vector)" if off else ""
    )


def build_widget(vq, images: np.ndarray):
    """The interactive view: an image slider, a checkbox per level, the picture and a summary.

    Returns an ipywidgets VBox (ipywidgets 7.7 or 8). Each change redraws the picture by
    replacing the PNG bytes of one `ipywidgets.Image`; with all levels unticked the summary
    says so and the picture stays as it was.
    """
    import ipywidgets as widgets

    view = ReconstructionView(vq, images)
    slider = widgets.IntSlider(
        value=0, min=0, max=len(view.images) - 1, description="image", continuous_update=False
    )
    boxes = {level: widgets.Checkbox(value=True, description=level, indent=False) for level in LEVELS}
    picture = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
    summary = widgets.Label()

    def redraw(_change=None) -> None:
        levels = tuple(level for level in LEVELS if boxes[level].value)
        if not levels:
            summary.value = NO_LEVEL
            return
        pixels, psnr = view.render(slider.value, levels)
        picture.value = png_bytes(pixels)
        summary.value = describe(slider.value, levels, psnr)

    for control in (slider, *boxes.values()):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([slider, *boxes.values()]), summary, picture])


def reconstruction_view_png(
    vq, images: np.ndarray, path: str | os.PathLike, index: int = 0, levels: tuple[str, ...] = LEVELS
) -> Path:
    """Write the widget's view of image `index` decoded from `levels` to the PNG file `path`.

    The file holds the bytes the widget shows for the same image and levels.
    """
    pixels, _ = ReconstructionView(vq, images).render(index, levels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(pixels))
    return path


def widgets_can_run() -> bool:
    """Whether a widget shown now can be used: ipywidgets imports and a notebook kernel
    (Jupyter, Colab, an interactive Kaggle session) runs this code.

    False in a plain Python process or a terminal IPython (no front-end), and in a saved Kaggle
    version (KAGGLE_KERNEL_RUN_TYPE=Batch), whose page keeps no live widgets.
    """
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") == "Batch":
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def reconstruction_widget(vq, images: np.ndarray, path: str | os.PathLike = "reconstruction_view.png"):
    """Pick an image and the levels to decode from; see the original beside the result, the
    three code maps and the PSNR.

    images: float32 (N, S, S, 3) in [0, 1]. Where widgets can run (`widgets_can_run`) returns
    the ipywidgets box of `build_widget`, to display. Elsewhere (a saved Kaggle version, a
    script, CI) writes the view of image 0 from all three levels to the PNG file `path`
    (relative to the working directory: on Kaggle an output of the notebook) and returns it
    as an `IPython.display.Image`, which a notebook shows, or as its path without IPython.
    """
    if widgets_can_run():
        return build_widget(vq, images)
    path = reconstruction_view_png(vq, images, path)
    log.info("widgets cannot run here; wrote the reconstruction view of image 0 to %s", path)
    try:
        from IPython.display import Image as DisplayImage
    except ImportError:
        return path
    return DisplayImage(data=path.read_bytes(), format="png")
