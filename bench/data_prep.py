"""Benchmark stage 01: `prepare` and the image reader at the full preset (512x512).

    python bench/data_prep.py [--images 240] [--workers N]

Generates photograph-like 1000x700 JPEGs (the size of the Kaggle whale photographs; not
timed), prepares them, then reads the result back in batches of 16. Prints JSON with
images per second for each. Targets on a 2-core machine: prepare >= 60, reader >= 400.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo_like(rng: np.random.Generator, width: int = 1000, height: int = 700) -> Image.Image:
    """Smooth sky/sea gradients, a few blurred shapes and sensor noise: compresses like a photo."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.uniform(40, 220, 3), rng.uniform(20, 160, 3)
    t = (y / height)[..., None]
    base = top * (1 - t) + bottom * t + 20 * np.sin(x / rng.uniform(40, 200))[..., None]
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(30, 200)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        draw.ellipse((cx - r, cy - r / 2, cx + r, cy + r / 2), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(img, np.float32) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def images_per_s(ds, batches: int | None = None) -> float:
    n, start = 0, time.perf_counter()
    for batch in ds.take(batches) if batches else ds:
        n += int(batch.shape[0])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hvq_utils import get_preset
    from hvq_utils.data import image_dataset
    from hvq_utils.prepare import prepare_images

    config = get_preset("full")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            photo_like(rng).save(src / f"{i:05d}.jpg", quality=90)

        load = os.getloadavg()[0]  # other work on the machine lowers every rate below
        start = time.perf_counter()
        manifest = prepare_images(src, out, config, workers=args.workers)
        prepare_rate = manifest["counts"]["written"] / (time.perf_counter() - start)
        # CPU per image in one process (decode, resize, encode, write): the rate an idle
        # machine reaches is about cores * 1000 / this.
        start = time.process_time()
        single = prepare_images(src, Path(tmp) / "single", config, workers=1)
        cpu_ms = (time.process_time() - start) * 1000 / single["counts"]["written"]

        evaluation = image_dataset(out, "train", batch_size=16, training=False)
        images_per_s(evaluation)  # warm-up pass: file cache, tf.data start-up
        eval_rate = images_per_s(evaluation)
        training = image_dataset(out, "train", batch_size=16, training=True, flip=True)
        images_per_s(training, 5)
        train_rate = images_per_s(training, 40)

    print(json.dumps({
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "images": args.images,
        "source": "1000x700 JPEG",
        "image_size": config.image_size,
        "load_average_1min": round(load, 2),
        "prepare_images_per_s": round(prepare_rate, 1),
        "prepare_cpu_ms_per_image": round(cpu_ms, 2),
        "reader_images_per_s": round(eval_rate, 1),
        "reader_training_flip_images_per_s": round(train_rate, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
