"""Stage 07: new images from the three priors and the VQ-VAE's decoder, and their gallery.

    python -m hvq_utils sample --vqvae runs/vqvae --top runs/prior-top --middle runs/prior-middle \\
        --bottom runs/prior-bottom --out runs/samples [--n 16] [--temperature 0.9] [--top-k 0] \\
        [--top-p 1] [--seed 0] [--variations-of IMAGES] [--keep top] [--inpaint x0,y0,x1,y1|MASK]

Modes:
- from scratch: top codes, then middle given top, then bottom given both (the cached sampler
  of `hvq_utils.sampling`), decoded by the VQ-VAE;
- variations (`variations_of`): each source image is encoded, the codes of the `keep`
  levels (default the top) are kept and the others resampled; sample i varies source
  i mod (number of sources);
- inpainting (`inpaint` with `variations_of`): at every level the codes outside a region
  (a rectangle in image pixels, or a mask image whose white pixels mark the region) are
  kept and those inside resampled.

Every input's manifest is checked first: priors trained on codes of another VQ-VAE are
refused, naming both. Only the "sample" group of settings is recorded and compared.
Samples are drawn in batches of `sample_batch_size`, a level at a time, each level saved
as it finishes, so a run cut off mid-way resumes; the noise of sample i depends on (seed,
level, i) only, so a re-run gives the same images. Written: the gallery (`hvq_utils.gallery`) in rank order
(lowest bits per code first), `codes.npz` and `manifest.json` with each sample's bits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hvq_utils.config import LEVELS, Config, upper_levels
from hvq_utils.manifest import (
    ManifestError,
    atomic_output,
    check_output,
    describe,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)
PROGRESS = "progress"  # out/progress/<level>.npz: codes and bits of each finished level


def _file_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(json.dumps([p.name, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


def check_inputs(
    vqvae_dir: str | os.PathLike, prior_dirs: Mapping[str, str | os.PathLike]
) -> dict[str, dict]:
    """{"vqvae": manifest, level: manifest, ...} after checking that each prior is of its
    level and was trained on codes of this VQ-VAE; raises ManifestError naming both."""
    missing = [lv for lv in LEVELS if lv not in prior_dirs]
    if missing:
        raise ValueError(f"no prior given for the {', '.join(missing)} level; pass --{missing[0]} DIR")
    vqm = read_manifest(vqvae_dir, "train-vqvae")
    inputs = {"vqvae": vqm}
    for level in LEVELS:
        prior = read_manifest(prior_dirs[level], "train-prior")
        if prior.get("level") != level:
            raise ManifestError(
                f"{describe(prior)} is the {prior.get('level')} prior, not the {level} prior; "
                f"pass the {level} prior's output as --{level}"
            )
        made_from = (prior.get("vqvae") or {}).get("hash")
        if made_from != vqm["hash"]:
            raise ManifestError(
                f"the {level} prior ({describe(prior)}) was trained on codes of another VQ-VAE "
                f"(hash {str(made_from)[:8]}) than {describe(vqm)}; pass the VQ-VAE its codes came from"
            )
        inputs[level] = prior
    return inputs


def region_mask(spec: str, image_size: int) -> np.ndarray:
    """bool (S, S), True where codes are resampled, from "x0,y0,x1,y1" (image pixels, x1 and
    y1 excluded) or the path of a mask image (white, >= 128, marks the region; resized to
    the image size)."""
    parts = spec.split(",")
    mask = np.zeros((image_size, image_size), bool)
    if len(parts) == 4:
        try:
            x0, y0, x1, y1 = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"--inpaint {spec!r} is not x0,y0,x1,y1 in whole pixels") from None
        if not (0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size):
            raise ValueError(
                f"--inpaint {spec!r} is not a rectangle inside the {image_size}x{image_size} image; "
                f"give 0 <= x0 < x1 <= {image_size} and 0 <= y0 < y1 <= {image_size}"
            )
        mask[y0:y1, x0:x1] = True
    else:
        from PIL import Image

        if not Path(spec).is_file():
            raise FileNotFoundError(f"--inpaint {spec!r} is neither x0,y0,x1,y1 nor a mask image file")
        with Image.open(spec) as img:
            grey = img.convert("L").resize((image_size, image_size), Image.Resampling.NEAREST)
            mask = np.asarray(grey) >= 128
    if not mask.any():
        raise ValueError(f"--inpaint {spec!r} marks no pixel; give a region to resample")
    return mask


def level_masks(region: np.ndarray, grid_sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """{level: bool (g, g)} True where a code is KEPT: codes whose pixels all lie outside
    `region` (bool (S, S), True = resample)."""
    size = region.shape[0]
    out = {}
    for level, g in grid_sizes.items():
        f = size // g
        touched = region.reshape(g, f, g, f).any(axis=(1, 3))  # (g, g)
        out[level] = ~touched
    return out


def load_sources(folder: str | os.PathLike, config: Config) -> tuple[np.ndarray, list[Path]]:
    """The images of a folder as float32 (N, S, S, 3) in [0, 1], resized as `prepare` does
    with the VQ-VAE's data settings; unreadable files are reported and skipped."""
    from hvq_utils.data.decode import ImageSettings, Rejected, find_images, load_square

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--variations-of {folder} is not a directory of images")
    names, _ = find_images(folder)
    settings = ImageSettings.from_config(config)
    images, used = [], []
    for name in names:
        try:
            images.append(np.asarray(load_square(str(folder / name), settings), np.float32) / 255.0)
            used.append(folder / name)
        except Rejected as e:
            log.warning("skipped %s: %s", folder / name, e)
    if not images:
        raise ValueError(f"--variations-of {folder} holds no usable image; point it at a folder of images")
    return np.stack(images), used


def _encode(vq, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    parts = [vq.encode(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return {lv: np.concatenate([np.asarray(p[lv]) for p in parts]).astype(np.int32) for lv in LEVELS}


def _decode(vq, codes: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) images from {level: int32 (N, g, g)}."""
    out = []
    for i in range(0, len(codes["top"]), batch_size):
        batch = {lv: codes[lv][i : i + batch_size] for lv in LEVELS}
        out.append(np.asarray(vq.decode(batch)))
    return np.round(np.clip(np.concatenate(out), 0.0, 1.0) * 255.0).astype(np.uint8)


def sample_images(
    vqvae_dir: str | os.PathLike,
    prior_dirs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    config: Config,
    variations_of: str | os.PathLike | None = None,
    keep: tuple[str, ...] = ("top",),
    inpaint: str | None = None,
    progress: bool = True,
) -> dict:
    """Stage 07 (see the module docstring); returns the manifest of `out_dir`.

    config: its "sample" group (n, temperature, top_k, top_p, sample_seed,
    sample_batch_size) is used and compared; everything else comes from the inputs.
    keep: the levels kept from each source image in variations (top first, e.g. ("top",)
    or ("top", "middle")); ignored when inpainting, which keeps codes outside the region.
    """
    inputs = check_inputs(vqvae_dir, prior_dirs)
    config = config.adopt(inputs["vqvae"])
    region = region_mask(inpaint, config.image_size) if inpaint else None
    if inpaint and variations_of is None:
        raise ValueError("--inpaint needs the images to inpaint: add --variations-of DIR")
    keep = tuple(keep)
    if variations_of is not None and not inpaint and keep not in (("top",), ("top", "middle")):
        raise ValueError(f"keep={keep!r} is not a run of upper levels; use top, or top,middle")
    grid_sizes = dict(zip(LEVELS, config.grid_sizes, strict=True))
    sources, source_paths = None, []
    identity: dict = {"mode": "scratch"}
    if variations_of is not None:
        sources, source_paths = load_sources(variations_of, config)
        inputs["images"] = {"stage": "images", "hash": _file_hash(source_paths), "_path": str(variations_of)}
        identity = {"mode": "variations", "keep": list(keep)}
        if region is not None:
            identity = {"mode": "inpaint", "region": hashlib.sha256(region.tobytes()).hexdigest()}
    out = Path(out_dir)
    verdict = check_output(out, "sample", config, inputs, identity)
    if verdict.state == "finished":
        return verdict.manifest

    from hvq_utils.runtime import setup_runtime

    setup_runtime(config)
    from hvq_utils.loading import load_model
    from hvq_utils.sampling.levels import cached_sampler

    vq = load_model(Path(vqvae_dir) / "vqvae.keras", compile=False)
    priors = {lv: load_model(Path(prior_dirs[lv]) / "prior.keras", compile=False) for lv in LEVELS}
    n, bs = config.n, config.sample_batch_size
    kept = None
    if sources is not None:
        src_codes = _encode(vq, sources, bs)
        index = np.arange(n) % len(sources)  # the source of each sample
        if region is not None:
            masks = level_masks(region, grid_sizes)
            kept = {
                lv: (src_codes[lv][index], np.broadcast_to(masks[lv], (n, *masks[lv].shape))) for lv in LEVELS
            }
        else:
            kept = {
                lv: (src_codes[lv][index], np.ones((n, g, g), bool))
                for lv, g in grid_sizes.items()
                if lv in keep
            }

    # One level at a time, each saved as it finishes: a cut-off run resumes at the first
    # missing level, and since the noise of sample i depends on (seed, level, i) only, the
    # images are those of an uninterrupted run.
    (out / PROGRESS).mkdir(parents=True, exist_ok=True)
    codes: dict[str, np.ndarray] = {}
    bits: dict[str, np.ndarray] = {}
    for level in LEVELS:
        path = out / PROGRESS / f"{level}.npz"
        if path.is_file():
            with np.load(path) as done:
                codes[level], bits[level] = done["codes"], done["bits"]
            continue
        sampler = cached_sampler(priors[level])
        codes[level], bits[level] = sampler.sample(
            n,
            cond={upper: codes[upper] for upper in upper_levels(level)},
            keep=None if kept is None else kept.get(level),
            temperature=config.temperature,
            top_k=config.top_k or None,
            top_p=config.top_p if config.top_p < 1.0 else None,
            seed=config.sample_seed,
            batch_size=bs,
            progress=progress,
        )
        with atomic_output(path) as tmp:
            np.savez(tmp, codes=np.asarray(codes[level], np.int32), bits=np.asarray(bits[level], np.float32))

    images = _decode(vq, codes, bs)
    positions = {lv: g * g for lv, g in grid_sizes.items()}
    total = sum(bits[lv] * positions[lv] for lv in LEVELS)  # (N,) bits of the whole sample
    rank = np.argsort(total, kind="stable")  # most likely first
    with atomic_output(out / "codes.npz") as tmp:
        np.savez(tmp, **codes)
    from hvq_utils.gallery import write_gallery

    shown_sources = None
    if sources is not None:
        shown_sources = np.round(sources[(np.arange(n) % len(sources))[rank]] * 255.0).astype(np.uint8)
    settings = {
        **config.section("sample"),
        **identity,
        "vqvae": inputs["vqvae"]["hash"][:12],
        **{f"{lv} prior": inputs[lv]["hash"][:12] for lv in LEVELS},
    }
    gallery = write_gallery(
        out,
        images[rank],
        {lv: codes[lv][rank] for lv in LEVELS},
        {lv: bits[lv][rank] for lv in LEVELS},
        settings,
        titles=[f"sample {i}" for i in rank],
        sources=shown_sources,
        codebook_sizes=dict(zip(LEVELS, config.codebook_sizes, strict=True)),
    )
    samples = [
        {
            "sample": int(i),
            "rank": r,
            "file": f"samples/sample_{r:04d}.png",
            "bits_per_code": {lv: float(bits[lv][i]) for lv in LEVELS},
            "total_bits": float(total[i]),
            **({"source": source_paths[i % len(source_paths)].name} if source_paths else {}),
        }
        for r, i in enumerate(rank)
    ]
    manifest = write_manifest(
        out,
        "sample",
        config,
        inputs,
        **identity,
        samples=samples,
        files=[*gallery["files"], "codes.npz"],
        image_size=config.image_size,
        grid_sizes=grid_sizes,
    )
    log.info("sampled %d images; gallery: %s", n, gallery["zip"])
    return manifest


def export_sources(data_dir: str | os.PathLike, folder: str | os.PathLike, n: int = 4) -> Path:
    """Write the first `n` prepared images of `data_dir` (validation first) as PNGs into
    `folder`, for `variations_of`; returns the folder."""
    from PIL import Image

    from hvq_utils.plots import preview_batch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(preview_batch(data_dir, n)):
        with atomic_output(folder / f"source_{i:02d}.png") as tmp:
            Image.fromarray(np.round(image * 255.0).astype(np.uint8)).save(tmp, format="PNG")
    return folder
