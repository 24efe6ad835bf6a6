"""Benchmark the VQ-VAE: training and reconstruction throughput on random images.

    python bench/vqvae.py --preset full --batch 2 [--steps 3] [--set encoder=shared ...]
    KERAS_BACKEND=jax python bench/vqvae.py --preset full --batch 2

Times compiled steps after one warm-up step each (which compiles): `train_on_batch` (forward,
backward, Adam, codebook update) and `predict_on_batch`, i.e. vq(images, training=False),
encode plus decode. Prints JSON with images per second, the parameter count, the preset,
batch, backend and encoder kind. The seed's implementation on a 2-core CPU, at the full
preset and batch 2: 0.20 training and 0.84 reconstruction images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def images_per_s(step, images: np.ndarray, steps: int) -> float:
    step(images)  # warm-up: traces and compiles
    start = time.perf_counter()
    for _ in range(steps):
        step(images)
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set encoder=shared (repeatable)",
    )
    args = parser.parse_args()

    from hvq_utils.runtime import tf_defaults

    tf_defaults()  # what the package's stages set before TensorFlow loads (oneDNN on the CPU)
    import keras

    from hvq_utils import get_preset, parse_overrides
    from hvq_utils.vqvae import build_vqvae, compile_vqvae

    config = get_preset(args.preset, **parse_overrides(args.overrides))
    keras.utils.set_random_seed(config.seed)
    vq = compile_vqvae(build_vqvae(config), config)
    size = config.image_size
    images = np.random.default_rng(0).random((args.batch, size, size, 3), dtype=np.float32)

    train = images_per_s(vq.train_on_batch, images, args.steps)
    reconstruct = images_per_s(vq.predict_on_batch, images, args.steps)
    print(json.dumps({
        "preset": args.preset,
        "batch": args.batch,
        "steps": args.steps,
        "backend": keras.backend.backend(),
        "encoder": config.encoder,
        # TensorFlow turns on its oneDNN CPU kernels by default only on CPUs with AVX-512 VNNI
        # or newer features; "1" turns them on anywhere (about 2x faster on a 2-core AVX2 CPU).
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "overrides": args.overrides,
        "parameters": int(vq.count_params()),
        "train_images_per_s": round(train, 3),
        "reconstruct_images_per_s": round(reconstruct, 3),
    }))


if __name__ == "__main__":
    main()
