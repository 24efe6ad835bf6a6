"""Finding, decoding and resizing source images with Pillow (no TensorFlow: this runs in workers).

Every image becomes an 8-bit RGB square of `image_size` pixels, encoded as JPEG:

- EXIF orientation is applied, so a portrait photo stored sideways stays portrait.
- Grayscale (1, L), CMYK, YCbCr and other colour modes are converted to RGB.
- Alpha (RGBA, LA, PA, palettes with a transparent colour) is composited on
  `Config.pad_color`, the same colour as the padding, so transparent regions and the
  padded border look alike to the model.
- 16-bit and 32-bit images are scaled to 8 bits, never clipped: I;16 by 65535 -> 255;
  32-bit integers (I) the same when they fit 0..65535, else min..max -> 0..255; floats (F)
  by 1.0 -> 255 when they lie in [0, 1], else min..max -> 0..255.
- Animations (GIF, APNG, WebP) and multi-page TIFFs give their first frame.

Resize policies (`Config.resize`):

- "pad" (the default): keep the aspect ratio, fit the long side, pad with `pad_color`.
  Humpback flukes fill wide photographs edge to edge (about 1050x700 in the Kaggle data),
  and the trailing-edge notches at the tips identify the whale; padding keeps all of it,
  where a centre crop would cut the tips off and stretching would distort the notches.
- "crop": scale the short side to `image_size` and cut the centre square.
- "stretch": scale each side to `image_size`, ignoring the aspect ratio.

A file that cannot be used is rejected with a reason, never with an exception: see
`prepare_one`.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from hvq_utils.config import Config

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)

# A JPEG may be decoded at a reduced scale down to this share of the size it is resized to,
# and is then scaled up by at most 1/0.95. That lets a 1000x700 photograph (and the Kaggle
# whales, 1050x700) decode at half scale, about 3x faster in all. The cost, measured against
# a Lanczos resize of the full decode on four 1000-pixel images (three photographs, one
# synthetic): 38-50 dB PSNR, less than the error of the JPEG (quality 95) that stores the
# result (35-44 dB on the same images).
DRAFT_SLACK = 0.95

# Modes that carry transparency; they are composited on the background colour.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class ImageSettings:
    """What a worker needs to turn one file into a stored image (small and picklable).

    max_pixels is Pillow's Image.MAX_IMAGE_PIXELS as the parent process saw it, so a limit
    set there (or in a test) holds in worker processes too.
    """

    image_size: int
    resize: str
    pad_color: tuple[int, int, int]
    min_image_side: int
    jpeg_quality: int
    max_pixels: int | None

    @classmethod
    def from_config(cls, config: Config) -> ImageSettings:
        return cls(
            image_size=config.image_size,
            resize=config.resize,
            pad_color=tuple(config.pad_color),
            min_image_side=config.min_image_side,
            jpeg_quality=config.jpeg_quality,
            max_pixels=Image.MAX_IMAGE_PIXELS,
        )


class Rejected(Exception):
    """A source file that cannot be used; the message is the reason shown to the user."""


def find_images(src: str | os.PathLike, skip: str | os.PathLike | None = None) -> tuple[list[str], int]:
    """Image files under `src`, recursively, and the number of other files ignored.

    Returns (relative POSIX paths sorted by code point, so the order is the same on every
    machine; count of non-image files). Extensions match in any letter case. `skip` is a
    directory left out of the walk (the output directory, when it lies inside `src`).
    """
    root = Path(src)
    skip_path = Path(skip).resolve() if skip is not None else None
    images: list[str] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_path is not None:
            dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).resolve() != skip_path]
        for name in filenames:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                images.append((Path(dirpath) / name).relative_to(root).as_posix())
            else:
                ignored += 1
    images.sort()
    return images, ignored


def _resized_size(width: int, height: int, size: int, policy: str) -> tuple[int, int]:
    """Size the whole (uncropped) picture is scaled to before padding or cropping."""
    if policy == "stretch":
        return size, size
    scale = size / (max(width, height) if policy == "pad" else min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_8bit(img: Image.Image) -> Image.Image:
    """I;16 / I / F single-channel image -> mode L, scaled as the module docstring says."""
    a = np.nan_to_num(np.asarray(img, dtype=np.float64))
    lo, hi = float(a.min()), float(a.max())
    if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and hi <= 65535):
        a = a * (255.0 / 65535.0)
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    else:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; alpha is composited on `background` (RGB 0..255)."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img if img.mode == "RGB" else img.convert("RGB")


def resize_square(img: Image.Image, size: int, policy: str, pad_color: tuple[int, int, int]) -> Image.Image:
    """RGB image of any size -> RGB `size` x `size` by the policy "pad", "crop" or "stretch"."""
    w, h = img.size
    # Bicubic: Pillow's downscaling filters are antialiased (the kernel widens with the scale),
    # and bicubic costs about 0.7x Lanczos for a result that is hard to tell apart.
    # reducing_gap: shrink by an integer factor with a box filter first while the remaining
    # scale stays >= 3; for big sources that is much faster and indistinguishable.
    if policy == "crop":
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    tw, th = _resized_size(w, h, size, policy)
    if (tw, th) != (w, h):
        img = img.resize((tw, th), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if policy == "stretch":
        return img
    canvas = Image.new("RGB", (size, size), pad_color)
    canvas.paste(img, ((size - tw) // 2, (size - th) // 2))
    return canvas


def _open_checked(path: str, settings: ImageSettings) -> Image.Image:
    """Open (header only) and check size limits; raises Rejected with the reason."""
    if os.path.getsize(path) == 0:
        raise Rejected("empty file")
    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    # Pillow warns between MAX_IMAGE_PIXELS and twice that, and raises above; both are bombs.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except UnidentifiedImageError:
            raise Rejected("not an image (Pillow cannot identify the file)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Rejected(
                f"decompression bomb: over Pillow's limit of {settings.max_pixels} pixels "
                "(PIL.Image.MAX_IMAGE_PIXELS)"
            ) from None
    w, h = img.size
    if min(w, h) < settings.min_image_side:
        img.close()
        raise Rejected(f"too small: {w}x{h}, a side under min_image_side={settings.min_image_side}")
    return img


def load_square(path: str, settings: ImageSettings) -> Image.Image:
    """Decode one file to an upright 8-bit RGB square of `settings.image_size` pixels;
    raises Rejected with the reason.

    For JPEGs, `draft` lets libjpeg decode at 1/2, 1/4 or 1/8 scale straight from the DCT
    coefficients, several times faster, as long as the result is at least DRAFT_SLACK of the
    size the final resize needs (see DRAFT_SLACK).
    """
    img = _open_checked(path, settings)
    # Closing destroys the pixels too, so everything happens inside this block.
    with img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
        # Orientations 5-8 swap width and height; draft works on the stored (unrotated) frame.
        swapped = orientation in (5, 6, 7, 8)
        tw, th = _resized_size(*((h, w) if swapped else (w, h)), settings.image_size, settings.resize)
        need = (math.ceil(tw * DRAFT_SLACK), math.ceil(th * DRAFT_SLACK))
        img.draft(None, need[::-1] if swapped else need)
        try:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise Rejected(f"truncated or corrupt: {e}") from None
        rgb = to_rgb(img, settings.pad_color)
        out = resize_square(rgb, settings.image_size, settings.resize, settings.pad_color)
        return out.copy() if out is img else out


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def prepare_one(path: str, settings: ImageSettings) -> tuple[bytes | None, str | None]:
    """One source file -> (JPEG bytes of the square RGB image, None) or (None, reason).

    Never raises on a bad file: anything Pillow cannot read becomes a reason string.
    """
    try:
        return encode_jpeg(load_square(path, settings), settings.jpeg_quality), None
    except Rejected as e:
        return None, str(e)
    except Exception as e:  # a bad file must never stop a run over thousands
        return None, f"unreadable: {type(e).__name__}: {e}"
