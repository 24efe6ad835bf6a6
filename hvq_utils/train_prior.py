"""Stages 04-06: train one level's PixelCNN prior on `encode`'s code TFRecords.

    python -m hvq_utils train-prior --level middle --codes runs/codes --out runs/prior-middle

Grids, codebook sizes and the VQ-VAE's settings come from the codes' manifest; the prior's
own settings (the "prior" group of the config) are the only ones this stage records and
compares. `out_dir` gets prior.keras and manifest.json (steps, bits per code on train and
validation, the codes' hash, the settings), log.csv, tensorboard/ and checkpoints/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hvq_utils.config import LEVELS, Config, upper_levels
from hvq_utils.loop import current_step, fit_resumable, save_model
from hvq_utils.manifest import ManifestError, check_output, read_manifest, write_manifest

log = logging.getLogger(__name__)


def train_prior(
    level: str,
    codes_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Config,
    resume_from: str | os.PathLike | None = None,
) -> dict:
    """Train the `level` prior on the codes in `codes_dir`; returns the manifest of `out_dir`.

    config: the user's config; every group the codes fixed (data, vqvae, encode) is
    replaced by the codes' own settings. resume_from: as in `train_vqvae`.
    """
    config.level(level)
    codes = read_manifest(codes_dir, "encode")
    config = config.adopt(codes)
    if codes["splits"].get("train", 0) < config.prior_batch_size:
        raise ValueError(
            f"{codes_dir} has {codes['splits'].get('train', 0)} training code grids, fewer than "
            f"prior_batch_size={config.prior_batch_size}; lower --set prior_batch_size"
        )
    identity = {"level": level}
    if resume_from is not None:  # the same rule, for the run it continues; nothing written there
        check_output(resume_from, "train-prior", config, {"codes": codes}, identity, record=False)
    out = Path(out_dir)
    verdict = check_output(out, "train-prior", config, {"codes": codes}, identity)
    if verdict.state == "finished":
        return verdict.manifest

    from hvq_utils.runtime import setup_runtime

    rt = setup_runtime(config, "prior_batch_size")
    bs = rt.global_batch(config.prior_batch_size)
    if codes["splits"].get("train", 0) < bs:
        raise ValueError(
            f"{codes_dir} has {codes['splits'].get('train', 0)} training code grids, fewer than the "
            f"global batch {bs} (prior_batch_size={config.prior_batch_size} x {rt.devices} devices); "
            "lower --set prior_batch_size"
        )
    import tensorflow as tf  # the code reader is tf.data

    from hvq_utils.data import code_dataset
    from hvq_utils.prior import build_prior, compile_prior

    needed = (*upper_levels(level), level)

    @tf.autograph.experimental.do_not_convert  # plain dict plumbing; nothing to convert
    def to_xy(d):
        x = {"codes": d[level], **{lv: d[lv] for lv in upper_levels(level)}}
        return x, d[level]

    def train_ds(step: int):
        seed = config.prior_seed + step
        return code_dataset(codes_dir, "train", bs, training=True, levels=needed, seed=seed).map(to_xy)

    val_ds = None
    if codes["splits"].get("validation", 0):
        val_ds = code_dataset(codes_dir, "validation", bs, levels=needed).map(to_xy)
    codebooks = load_codebooks(codes_dir) if config.prior_embedding == "codebook" else None

    def build():
        return compile_prior(build_prior(config, level, codebooks=codebooks), config)

    model, logs = fit_resumable(
        build, train_ds, val_ds, out, config.prior_steps, config.checkpoint_every, rt.scope, resume_from,
        final="prior.keras",
    )
    val_scores = model.evaluate(val_ds, verbose=0, return_dict=True) if val_ds is not None else {}
    save_model(model, out / "prior.keras")
    bits = {
        "train": float(logs["bits_per_code"]) if "bits_per_code" in logs else None,
        "val": float(val_scores["bits_per_code"]) if val_scores else None,
    }
    manifest = write_manifest(
        out,
        "train-prior",
        config,
        {"codes": codes},
        level=level,
        steps=current_step(model),
        metrics={"bits_per_code": bits},
        files=["prior.keras"],
        vqvae=codes["inputs"].get("vqvae"),
        grid_size=config.grid_sizes[config.level(level)],
        codebook_size=config.codebook_sizes[config.level(level)],
        global_batch=bs,
    )
    shown = ", ".join(f"{k} {v:.3f}" for k, v in bits.items() if v is not None)
    log.info("%s prior: %d steps; bits per code: %s", level, manifest["steps"], shown)
    return manifest


def load_codebooks(codes_dir: str | os.PathLike) -> dict:
    """{level: float32 (K, D)} codebook vectors that `encode` stored beside the codes."""
    import numpy as np

    path = Path(codes_dir) / "codebooks.npz"
    if not path.is_file():
        raise ManifestError(f"{path} is missing; re-run `encode` to store the VQ-VAE's codebooks")
    with np.load(path) as f:
        return {lv: f[lv].astype("float32") for lv in LEVELS}
