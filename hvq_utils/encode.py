"""Stage 03: every prepared image -> its top, middle and bottom code grids, with the frozen VQ-VAE.

    python -m hvq_utils encode --data runs/data --vqvae runs/vqvae --out runs/codes

The image size and the model come from the VQ-VAE's manifest; this stage's own settings
(the "encode" group: the batch size) are the only ones it records and compares. The output
holds code TFRecords per split (read by `hvq_utils.data.code_dataset`), the VQ-VAE's
codebooks (`codebooks.npz`, for priors that embed codes with them) and a manifest with the
counts, grid shapes, code histograms and validation PSNR (mean of per-image PSNR).

With `encode_flips` the train split also holds the codes of every train image flipped
left-right (source id "<id>#flipped"), after its batch: the priors, which overfit small data
sets, train on twice the codes, each of an image the VQ-VAE reconstructs as well (it trains
with flips). The manifest's `splits` count code records; `images` counts the images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hvq_utils.config import LEVELS, Config
from hvq_utils.manifest import (
    ManifestError,
    atomic_output,
    check_output,
    describe,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")


def _check_inputs(data: dict, vqm: dict) -> None:
    have, want = data["image_size"], vqm["image_size"]
    if have != want:
        raise ManifestError(
            f"{describe(data)} holds {have}-pixel images but {describe(vqm)} was trained on "
            f"{want}-pixel images; prepare the data with the VQ-VAE's preset"
        )


def encode_codes(
    data_dir: str | os.PathLike,
    vqvae_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Config | None = None,
) -> dict:
    """Encode both splits of `data_dir` with the VQ-VAE in `vqvae_dir`; returns the manifest.

    config: the user's config (default: the full preset); only its "encode" group and
    runtime are used, the rest comes from the VQ-VAE. Re-running after an interruption
    starts the encoding over (it is one pass over the data); re-running after it finished
    with the same settings and inputs returns the existing manifest.
    """
    from hvq_utils.config import get_preset

    data = read_manifest(data_dir, "prepare")
    vqm = read_manifest(vqvae_dir, "train-vqvae")
    _check_inputs(data, vqm)
    config = (config or get_preset()).adopt(vqm)
    out = Path(out_dir)
    verdict = check_output(out, "encode", config, {"vqvae": vqm, "data": data})
    if verdict.state == "finished":
        return verdict.manifest
    from hvq_utils.runtime import setup_runtime

    rt = setup_runtime(config, "encode_batch_size")
    batch_size = rt.global_batch(config.encode_batch_size)

    from hvq_utils.data import CodeShardWriter, image_dataset
    from hvq_utils.loading import load_model
    from hvq_utils.vqvae import psnr_db

    vq = load_model(Path(vqvae_dir) / "vqvae.keras")
    code_model = vq.code_model()
    for old in out.glob("*.tfrecord"):
        old.unlink()
    (out / "manifest.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    hist = {lv: np.zeros(k, np.int64) for lv, k in zip(LEVELS, config.codebook_sizes, strict=True)}
    shards, splits, records, psnrs = [], {}, {}, []
    bar = tqdm(total=sum(data["splits"].get(s, 0) for s in SPLITS), unit="img", desc="encode")
    for split in SPLITS:
        splits[split] = records[split] = 0
        if not data["splits"].get(split):
            continue
        ds = image_dataset(data_dir, split, batch_size, with_ids=True)
        with CodeShardWriter(out, split) as writer:
            for images, ids in ds.as_numpy_iterator():
                n = len(images)
                # Every call gets a full batch (the last one padded): one compiled program, and
                # a batch that splits evenly over the devices of a data-parallel TPU.
                full = images
                if n < batch_size:
                    padding = np.zeros((batch_size - n, *images.shape[1:]), images.dtype)
                    full = np.concatenate([images, padding])
                names = [i.decode() for i in ids]
                flips = [False, True] if split == "train" and config.encode_flips else [False]
                for flipped in flips:
                    x = full[:, :, ::-1] if flipped else full
                    codes = {lv: np.asarray(c)[:n] for lv, c in code_model.predict_on_batch(x).items()}
                    tags = [f"{i}#flipped" for i in names] if flipped else names
                    writer.add_batch(codes, tags)  # int32 (n, g, g) per level
                    for lv in LEVELS:
                        hist[lv] += np.bincount(codes[lv].ravel(), minlength=len(hist[lv]))
                    records[split] += n
                if split == "validation":
                    recon = np.asarray(vq.predict_on_batch(full)["images"])[:n]  # decode(encode(x))
                    mse = np.mean((recon - images) ** 2, axis=(1, 2, 3))  # (n,)
                    psnrs += np.asarray(psnr_db(mse)).tolist()
                splits[split] += n
                bar.update(n)
        shards += writer.shards
    bar.close()

    codebooks = vq.codebooks()
    with atomic_output(out / "codebooks.npz") as tmp:
        np.savez(tmp, **{lv: np.asarray(codebooks[lv], np.float32) for lv in LEVELS})
    manifest = write_manifest(
        out,
        "encode",
        config,
        {"vqvae": vqm, "data": data},
        shards=shards,
        splits=records,
        images=splits,
        grid_sizes=dict(zip(LEVELS, config.grid_sizes, strict=True)),
        codebook_sizes=dict(zip(LEVELS, config.codebook_sizes, strict=True)),
        histograms={lv: h.tolist() for lv, h in hist.items()},
        validation={"psnr": float(np.mean(psnrs)) if psnrs else None, "images": len(psnrs)},
        files=["codebooks.npz"],
    )
    used = ", ".join(f"{lv} {int((h > 0).sum())}/{len(h)}" for lv, h in hist.items())
    psnr = manifest["validation"]["psnr"]
    log.info(
        "encoded %d train + %d validation images%s; codes used: %s%s",
        splits["train"], splits["validation"],
        " (train also flipped)" if config.encode_flips else "", used,
        f"; validation PSNR {psnr:.2f} dB" if psnr else "",
    )
    return manifest
