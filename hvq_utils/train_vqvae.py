"""Stage 02: train the 3-level VQ-VAE on `prepare`'s image TFRecords.

    python -m hvq_utils train-vqvae --data runs/data --out runs/vqvae [--preset P] [--steps N]

The image size comes from the data's manifest; the VQ-VAE's own settings (the "vqvae"
group of the config) are the only ones this stage records and compares. `out_dir` gets
vqvae.keras, manifest.json (steps, validation metrics, the data's hash, the settings),
log.csv, tensorboard/ and checkpoints/. Re-running after an interruption resumes.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from hvq_utils.config import LEVELS, Config
from hvq_utils.loop import current_step, fit_resumable, save_model
from hvq_utils.manifest import check_output, read_manifest, write_manifest

log = logging.getLogger(__name__)


def train_vqvae(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Config,
    resume_from: str | os.PathLike | None = None,
) -> dict:
    """Train the VQ-VAE on `data_dir` into `out_dir`; returns the manifest of `out_dir`.

    config: the user's config; its "data" group is replaced by the data's own settings.
    resume_from: an earlier output of this stage (may be read-only, e.g. a Kaggle input or
    a Drive folder) whose newest checkpoint a fresh `out_dir` continues from.
    """
    data = read_manifest(data_dir, "prepare")
    config = config.adopt(data)
    if data["splits"].get("train", 0) < config.batch_size:
        raise ValueError(
            f"{data_dir} has {data['splits'].get('train', 0)} training images, fewer than "
            f"batch_size={config.batch_size}; add images or lower --set batch_size"
        )
    if resume_from is not None:  # the same rule, for the run it continues; nothing written there
        check_output(resume_from, "train-vqvae", config, {"data": data}, record=False)
    out = Path(out_dir)
    verdict = check_output(out, "train-vqvae", config, {"data": data})
    if verdict.state == "finished":
        return verdict.manifest

    from hvq_utils.runtime import setup_runtime

    rt = setup_runtime(config, "batch_size")
    batch = rt.global_batch(config.batch_size)
    if data["splits"].get("train", 0) < batch:
        raise ValueError(
            f"{data_dir} has {data['splits'].get('train', 0)} training images, fewer than the global "
            f"batch {batch} (batch_size={config.batch_size} x {rt.devices} devices); lower --set batch_size"
        )
    from hvq_utils.data import image_dataset
    from hvq_utils.vqvae import build_vqvae, compile_vqvae

    def train_ds(step: int):
        return image_dataset(
            data_dir, "train", batch, training=True, flip=config.flip, seed=config.seed + step
        )

    val_ds = None
    if data["splits"].get("validation", 0):
        val_ds = image_dataset(data_dir, "validation", batch)

    def build():
        return compile_vqvae(build_vqvae(config), config)

    start = time.time()
    model, _ = fit_resumable(
        build, train_ds, val_ds, out, config.steps, config.checkpoint_every, rt.scope, resume_from,
        final="vqvae.keras",
    )
    scored = val_ds if val_ds is not None else train_ds(0).take(4)
    scores = model.evaluate(scored, verbose=0, return_dict=True)
    save_model(model, out / "vqvae.keras")
    metrics = {
        "split": "validation" if val_ds is not None else "train",
        "mse": float(scores["mse"]),
        "psnr": float(scores["psnr"]),
        "code_usage": {lv: float(scores[f"{lv}_usage"]) for lv in LEVELS},
        "perplexity": {lv: float(scores[f"{lv}_perplexity"]) for lv in LEVELS},
    }
    manifest = write_manifest(
        out,
        "train-vqvae",
        config,
        {"data": data},
        steps=current_step(model),
        metrics=metrics,
        files=["vqvae.keras"],
        image_size=config.image_size,
        grid_sizes=dict(zip(LEVELS, config.grid_sizes, strict=True)),
        codebook_sizes=dict(zip(LEVELS, config.codebook_sizes, strict=True)),
        seconds_this_session=round(time.time() - start, 1),
        global_batch=batch,
    )
    log.info(
        "vqvae: %d steps; %s mse %.5f, psnr %.2f dB; usage %s",
        manifest["steps"], metrics["split"], metrics["mse"], metrics["psnr"],
        ", ".join(f"{lv} {metrics['code_usage'][lv]:.0%}" for lv in LEVELS),
    )
    return manifest
