"""Training speed of one level's PixelCNN prior; prints one JSON object.

    python bench/prior.py --preset full --level bottom --batch 4 --steps 3 --warmup 1

Random codes of the preset's grids (speed does not depend on their values). The first
`--warmup` steps (graph tracing or XLA compilation) are timed apart from the measured ones.
KERAS_BACKEND picks the backend (on a 2-core CPU, TensorFlow trains the full-preset
middle and bottom priors about 2x faster per step than JAX; JAX warms up faster).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--level", default="top", choices=("top", "middle", "bottom"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="measured steps, after warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    from hvq_utils.runtime import tf_defaults

    tf_defaults()  # what the package's stages set before TensorFlow loads
    import keras

    from hvq_utils import LEVELS, get_preset
    from hvq_utils.prior import build_prior, compile_prior

    config = get_preset(args.preset)
    rng = np.random.default_rng(0)
    inputs = {}
    for name in LEVELS[: config.level(args.level) + 1]:
        i = config.level(name)
        g = config.grid_sizes[i]
        codes = rng.integers(0, config.codebook_sizes[i], (args.batch, g, g)).astype("int32")
        inputs["codes" if name == args.level else name] = codes
    codebooks = None
    if config.prior_embedding == "codebook":
        codebooks = {
            name: rng.normal(size=(k, config.latent_dim)).astype("float32")
            for name, k in zip(LEVELS, config.codebook_sizes, strict=True)
        }
    prior = compile_prior(build_prior(config, args.level, codebooks=codebooks), config)

    start = time.perf_counter()
    for _ in range(args.warmup):
        prior.train_on_batch(inputs, inputs["codes"])
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        logs = prior.train_on_batch(inputs, inputs["codes"], return_dict=True)
    elapsed = time.perf_counter() - start

    g = config.grid_sizes[config.level(args.level)]
    print(json.dumps({
        "preset": args.preset,
        "level": args.level,
        "grid": [g, g],
        "batch": args.batch,
        "backend": keras.backend.backend(),
        "params": prior.count_params(),
        "trainable_params": sum(int(np.prod(v.shape)) for v in prior.trainable_variables),
        "warmup_steps": args.warmup,
        "warmup_s": round(warmup_s, 2),
        "steps": args.steps,
        "steps_per_s": round(args.steps / elapsed, 4),
        "images_per_s": round(args.steps * args.batch / elapsed, 3),
        "loss": round(float(logs["loss"]), 4),
    }))


if __name__ == "__main__":
    main()
