"""Sampling speed: the cached sampler against the naive reference; prints one JSON object.

    python bench/sampling.py --preset full --n 10 --backend jax

The three priors and the VQ-VAE of the preset are built with random weights (speed does
not depend on them). `cached_s`: all three levels sampled by `CachedSampler` (a second,
warm run) and decoded by the VQ-VAE (`vq.decode`, compiled); `compile_s`: what the first
run took on top of it.
`naive_s`: the reference sampler's time per position (a full forward pass each), measured
over `--naive-positions` positions per level after a warm-up position, times each
level's positions: extrapolated, since the whole run would take hours. `max_logit_diff`:
the sampled codes teacher-forced through the prior's full forward pass against the
cached path's logits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _device(backend: str) -> str:
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return f"{d.platform} ({d.device_kind}), {len(jax.devices())} device(s), {os.cpu_count()} CPU cores"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"{f'gpu x{len(gpus)}' if gpus else 'cpu'}, {os.cpu_count()} CPU cores"


def _compiled(fn):
    """fn as one compiled program (JAX runs convolutions op by op otherwise: 5 s against
    4 s to decode 10 images at 512x512 on a 2-core CPU); a tf.function on TensorFlow."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--n", type=int, default=10, help="images sampled")
    parser.add_argument("--batch-size", type=int, default=None, help="default: n (one batch)")
    parser.add_argument("--backend", choices=("jax", "tensorflow"), default=None)
    parser.add_argument("--naive-positions", type=int, default=64, help="measured per level")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.backend:
        if "keras" in sys.modules:
            raise SystemExit("--backend must be set before Keras is imported; run this as a script")
        os.environ["KERAS_BACKEND"] = args.backend

    from hvq_utils.runtime import tf_defaults

    tf_defaults()  # what the package's stages set before TensorFlow loads
    import keras
    import numpy as np

    from hvq_utils import LEVELS, get_preset
    from hvq_utils.prior import build_prior
    from hvq_utils.sampling import CachedSampler, ReferenceSampler
    from hvq_utils.sampling.backend import full_precision
    from hvq_utils.vqvae import build_vqvae

    config = get_preset(args.preset)
    n = args.n
    batch = args.batch_size or n
    keras.utils.set_random_seed(args.seed)
    codebooks = None
    if config.prior_embedding == "codebook":
        rng = np.random.default_rng(args.seed)
        codebooks = {
            name: rng.normal(size=(k, config.latent_dim)).astype("float32")
            for name, k in zip(LEVELS, config.codebook_sizes, strict=True)
        }
    priors = {level: build_prior(config, level, codebooks=codebooks) for level in LEVELS}
    samplers = {level: CachedSampler(prior) for level, prior in priors.items()}
    vq = build_vqvae(config)
    decode = _compiled(vq.decode)

    def run() -> tuple[dict, dict, dict]:
        codes, bits, seconds = {}, {}, {}
        for level in LEVELS:
            cond = {upper: codes[upper] for upper in LEVELS[: LEVELS.index(level)]}
            start = time.perf_counter()
            codes[level], bits[level] = samplers[level].sample(
                n, cond=cond, seed=args.seed, batch_size=batch, progress=False
            )
            seconds[level] = time.perf_counter() - start
        start = time.perf_counter()
        keras.ops.convert_to_numpy(decode(codes))  # (n, S, S, 3)
        seconds["decode"] = time.perf_counter() - start
        return codes, bits, seconds

    start = time.perf_counter()
    run()
    cold_s = time.perf_counter() - start
    codes, bits, seconds = run()
    cached_s = sum(seconds.values())

    levels, naive_s, max_diff, max_logit = {}, 0.0, 0.0, 0.0
    for level in LEVELS:
        i = config.level(level)
        g = config.grid_sizes[i]
        cond = {upper: codes[upper] for upper in LEVELS[:i]}
        reference = ReferenceSampler(priors[level])
        positions = min(args.naive_positions, g * g)
        reference.sample(n, cond=cond, seed=args.seed, batch_size=batch, progress=False, positions=1)
        start = time.perf_counter()
        reference.sample(
            n, cond=cond, seed=args.seed, batch_size=batch, progress=False, positions=positions
        )
        per_position = (time.perf_counter() - start) / positions
        naive_s += per_position * g * g
        cached = samplers[level].teacher_forced_logits(codes[level], cond, batch_size=batch)
        with full_precision():
            full = keras.ops.convert_to_numpy(priors[level]({"codes": codes[level], **cond}))
        max_diff = max(max_diff, float(np.abs(cached - full).max()))
        max_logit = max(max_logit, float(np.abs(full).max()))
        levels[level] = {
            "grid": [g, g],
            "channels": config.prior_channels[i],
            "blocks": config.prior_blocks[i],
            "seconds": round(seconds[level], 3),
            "ms_per_position": round(1000 * seconds[level] / (g * g), 3),
            "naive_ms_per_position": round(1000 * per_position, 1),
            "naive_measured_positions": positions,
            "naive_s_extrapolated": round(per_position * g * g, 1),
            "bits_per_code": round(float(bits[level].mean()), 4),
        }

    backend = keras.backend.backend()
    print(json.dumps({
        "preset": args.preset,
        "backend": backend,
        "device": _device(backend),
        "precision": "float32, full-precision matmuls (no TF32 / bfloat16 passes)",
        "n": n,
        "batch_size": batch,
        "cached_s": round(cached_s, 2),
        "compile_s": round(cold_s - cached_s, 2),
        "decode_s": round(seconds["decode"], 3),
        "levels": levels,
        "naive_s": round(naive_s, 1),
        "naive_s_is": "extrapolated: reference seconds per position x positions, per level",
        "speedup": round(naive_s / cached_s, 1),
        "max_logit_diff": max_diff,
        "max_abs_logit": max_logit,
    }))


if __name__ == "__main__":
    main()
