"""Stage 03: every prepared image -> its top, middle and bottom code grids, with the frozen VQ-VAE.

    python -m hvq_utils encode --data runs/data --vqvae runs/vqvae --out runs/codes

The output holds code TFRecords per split (read by `hvq_utils.data.code_dataset`), the
VQ-VAE's codebooks (`codebooks.npz`, for priors that embed codes with them) and a manifest
with the counts, grid shapes, code histograms and validation PSNR.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hvq_utils.config import LEVELS, Config
from hvq_utils.manifest import ManifestError, describe, read_manifest, write_manifest

SPLITS = ("train", "validation")


def _check_inputs(data: dict, vqm: dict) -> None:
    have, want = data["config"].get("image_size"), vqm["config"].get("image_size")
    if have != want:
        raise ManifestError(
            f"{describe(data)} holds {have}-pixel images but {describe(vqm)} was trained on "
            f"{want}-pixel images; prepare the data with the VQ-VAE's preset"
        )


def encode_codes(
    data_dir: str | os.PathLike,
    vqvae_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int | None = None,
) -> dict:
    """Encode both splits of `data_dir` with the VQ-VAE in `vqvae_dir`; returns the manifest.

    Re-running after an interruption starts the encoding over (it is one pass over the data);
    re-running after it finished with the same inputs returns the existing manifest.
    """
    data = read_manifest(data_dir, "prepare")
    vqm = read_manifest(vqvae_dir, "train-vqvae")
    _check_inputs(data, vqm)
    out = Path(out_dir)
    try:
        done = read_manifest(out, "encode")
        if done["inputs"]["vqvae"]["hash"] == vqm["hash"] and done["inputs"]["data"]["hash"] == data["hash"]:
            print(f"{out} already holds these codes; nothing to do")
            return done
    except ManifestError:
        pass
    config = Config.from_dict(vqm["config"])
    batch_size = batch_size or config.batch_size

    from hvq_utils.runtime import setup_runtime

    rt = setup_runtime(config)
    if batch_size % rt.devices:
        raise ValueError(
            f"batch_size={batch_size} does not split over {rt.devices} devices; "
            f"use a multiple of {rt.devices} (--batch-size)"
        )

    from hvq_utils.data import CodeShardWriter, image_dataset
    from hvq_utils.saving import load_model

    vq = load_model(Path(vqvae_dir) / "vqvae.keras")
    code_model = vq.code_model()
    for old in out.glob("*.tfrecord"):
        old.unlink()
    (out / "manifest.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    hist = {lv: np.zeros(k, np.int64) for lv, k in zip(LEVELS, config.codebook_sizes, strict=True)}
    shards, splits, sq_err, n_val = [], {}, 0.0, 0
    for split in SPLITS:
        splits[split] = 0
        if not data["splits"].get(split):
            continue
        ds = image_dataset(data_dir, split, batch_size, training=False, config=config, with_ids=True)
        with CodeShardWriter(out, split) as writer:
            for images, ids in ds.as_numpy_iterator():
                n = len(images)
                # Every call gets a full batch (the last one padded): one compiled program, and
                # a batch that splits evenly over the devices of a data-parallel TPU.
                full = images
                if n < batch_size:
                    padding = np.zeros((batch_size - n, *images.shape[1:]), images.dtype)
                    full = np.concatenate([images, padding])
                codes = {lv: np.asarray(c)[:n] for lv, c in code_model.predict_on_batch(full).items()}
                writer.add_batch(codes, [i.decode() for i in ids])  # int32 (n, g, g) per level
                for lv in LEVELS:
                    hist[lv] += np.bincount(codes[lv].ravel(), minlength=len(hist[lv]))
                if split == "validation":
                    recon = np.asarray(vq.predict_on_batch(full))[:n]  # = decode(encode(images))
                    sq_err += float(np.mean((recon - images) ** 2, axis=(1, 2, 3)).sum())
                    n_val += n
                splits[split] += n
        shards += writer.shards

    codebooks = vq.codebooks()
    tmp = out / ".codebooks.tmp.npz"
    np.savez(tmp, **{lv: np.asarray(codebooks[lv], np.float32) for lv in LEVELS})
    os.replace(tmp, out / "codebooks.npz")
    val_mse = sq_err / n_val if n_val else None
    manifest = write_manifest(
        out,
        "encode",
        config.to_dict(),
        {"vqvae": vqm, "data": data},
        shards=shards,
        splits=splits,
        grid_sizes=dict(zip(LEVELS, config.grid_sizes, strict=True)),
        codebook_sizes=dict(zip(LEVELS, config.codebook_sizes, strict=True)),
        histograms={lv: h.tolist() for lv, h in hist.items()},
        validation={"mse": val_mse, "psnr": None if not val_mse else float(10 * np.log10(1 / val_mse))},
        files=["codebooks.npz"],
    )
    used = ", ".join(f"{lv} {int((h > 0).sum())}/{len(h)}" for lv, h in hist.items())
    psnr = manifest["validation"]["psnr"]
    print(
        f"encoded {splits['train']} train + {splits['validation']} validation images; codes used: {used}"
        + (f"; validation PSNR {psnr:.2f} dB" if psnr else "")
    )
    return manifest
