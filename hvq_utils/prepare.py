"""Stage 01: a folder of images -> sharded image TFRecords and manifest.json.

    python -m hvq_utils prepare --src DIR --out DIR [--preset P] [--set key=value ...]
    prepare_images("/kaggle/input/humpback-whale-identification", "prepared", get_preset())

Images are found recursively (hvq_utils.data.images says which and how they are
converted), split into train and validation by a hash of their relative path, decoded,
resized and JPEG-encoded by worker processes, and written by this process into shards of
about `shard_mb` megabytes per split, in sorted path order.

Resuming: after each completed shard, `.prepare-progress.json` records it together with
the images it covers and the files rejected among them. A re-run of the same command
(same files, same image settings) keeps those shards and carries on after them; anything
else in `--out` that a killed run left (temporary shards, shards not in the record, an
old manifest) is deleted first. The manifest is written last, so a reader never sees an
unfinished run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from hvq_utils.config import Config
from hvq_utils.data.decode import IMAGE_EXTENSIONS, ImageSettings, find_images, prepare_one
from hvq_utils.manifest import MANIFEST, atomic_write_bytes, check_output, write_manifest
from hvq_utils.runtime import detect_platform

log = logging.getLogger(__name__)

COMPETITION = "humpback-whale-identification"
PROGRESS = ".prepare-progress.json"
SAMPLE_DIR = "_sample_src"
SHOW_REJECTED = 20


def find_source(src: str = "auto") -> str:
    """The folder to prepare: `src` itself, or for "auto" the Kaggle competition "Humpback
    Whale Identification": on Kaggle the attached copy under /kaggle/input (attached with
    kagglehub if it is not), on Colab downloaded with kagglehub (Kaggle credentials from Colab
    Secrets, and the competition's rules accepted on kaggle.com); elsewhere "sample", the
    photographs that ship with scikit-image."""
    if src != "auto":
        return src
    platform = detect_platform()
    if platform == "kaggle":
        for path in (Path("/kaggle/input") / COMPETITION, Path("/kaggle/input/competitions") / COMPETITION):
            if path.is_dir():
                return str(path)
    if platform in ("kaggle", "colab"):
        return _download_competition()
    return "sample"


def _download_competition() -> str:
    """The competition's files through kagglehub (inside Kaggle it attaches them), or one line
    saying what to attach or set."""
    from hvq_utils.kaggle_auth import ensure_credentials

    ensure_credentials(required=detect_platform() != "kaggle")  # Kaggle attaches without them
    import kagglehub

    try:
        return kagglehub.competition_download(COMPETITION)
    except Exception as e:
        said = (str(e).strip().splitlines() or [""])[0]
        raise FileNotFoundError(
            f"could not get the competition data ({type(e).__name__}: {said}); "
            f"accept the rules at kaggle.com/competitions/{COMPETITION}, attach it (Kaggle: Add Input > "
            "Competitions > Humpback Whale Identification), or set SRC to a folder of images"
        ) from None


def split_of(rel_path: str, val_fraction: float) -> str:
    """"train" or "validation" for a relative path: the same on every machine and run,
    whatever the file order or worker count, since it depends on the path alone."""
    h = int.from_bytes(hashlib.sha256(rel_path.encode()).digest()[:8], "big") / 2.0**64
    return "validation" if h < val_fraction else "train"


def _listing_hash(src: Path, paths: list[str]) -> str:
    """Identifies the source: the same files, by relative path, size and mtime."""
    files = []
    for p in paths:
        st = os.stat(src / p)
        files.append((p, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


def _run_key(listing: str, config: Config) -> str:
    """Identifies the work: the same source listing and the same data settings."""
    body = {"settings": config.section("data"), "files": listing}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _resume(out: Path, key: str) -> list[dict]:
    """Completed shards a previous run of the same work recorded, still intact on disk, with
    everything else a previous run left deleted. Entries: {file, split, count, sha256, bytes,
    end (images of the split covered), rejected}."""
    from hvq_utils.data.records import SHARD_RE, SPLITS, TEMP_SUFFIX
    try:
        progress = json.loads((out / PROGRESS).read_text())
    except (OSError, ValueError):
        progress = {}
    kept: list[dict] = []
    if progress.get("key") == key:
        for split in SPLITS:
            # Only an unbroken run of shards from index 0 can be continued.
            for entry in (e for e in progress.get("shards", []) if e["split"] == split):
                path = out / entry["file"]
                if not (path.is_file() and path.stat().st_size == entry["bytes"]):
                    break
                kept.append(entry)
    keep = {e["file"] for e in kept}
    for path in out.iterdir():
        name = path.name
        stale_shard = SHARD_RE.match(name) and name not in keep
        temp = name.startswith(".") and (name.endswith(TEMP_SUFFIX) or name.startswith(".tmp-"))
        if stale_shard or temp or name == MANIFEST:
            path.unlink()
    _save_progress(out, key, kept)
    return kept


def _save_progress(out: Path, key: str, shards: list[dict]) -> None:
    atomic_write_bytes(out / PROGRESS, json.dumps({"key": key, "shards": shards}).encode())


def _default_workers() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _results(
    files: list[str], settings: ImageSettings, workers: int
) -> Iterator[tuple[bytes | None, str | None]]:
    """prepare_one over files, in order, on `workers` processes (1: in this process)."""
    work = functools.partial(prepare_one, settings=settings)
    if workers <= 1 or len(files) <= 1:
        yield from map(work, files)
        return
    # Linux: fork. spawn and forkserver start each worker by re-running the caller's main
    # script (CPython does not preload it in the fork server), and a script that imports
    # TensorFlow at the top then costs seconds and hundreds of MB per worker. A forked worker
    # does not inherit TensorFlow's threads, touches no TensorFlow state (it runs Pillow and
    # numpy only) and leaves by os._exit, so no lock TensorFlow held at the fork is needed.
    # Elsewhere spawn: macOS system libraries are unsafe after fork, Windows has none.
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    chunk = max(1, min(16, len(files) // (4 * workers)))
    with warnings.catch_warnings():
        # Python 3.12+ warns on any fork of a multi-threaded process; see above for why it is safe.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pool = ctx.Pool(workers)
    with pool:
        yield from pool.imap(work, files, chunksize=chunk)


def _summary(out: Path, counts: dict, splits: dict, shards: list, rejected: list, size: int) -> str:
    lines = [
        f"prepare: found {counts['found']} images = {counts['written']} written + "
        f"{counts['rejected']} rejected; train {splits['train']}, validation "
        f"{splits['validation']} in {len(shards)} shards of {size}x{size}; "
        f"{counts['ignored']} other files ignored -> {out}"
    ]
    if rejected:
        lines.append(f"rejected ({len(rejected)}):")
        lines += [f"  {r['path']}: {r['reason']}" for r in rejected[:SHOW_REJECTED]]
        if len(rejected) > SHOW_REJECTED:
            lines.append(f"  ... and {len(rejected) - SHOW_REJECTED} more (all in {out / MANIFEST})")
    return "\n".join(lines)


def _write_split_shards(
    out: Path,
    split: str,
    names: list[str],
    done: list[dict],
    results: Iterable[tuple[bytes | None, str | None]],
    config: Config,
    on_shard,
    bar,
) -> list[dict]:
    """Write the images of one split after those in `done`; returns the rejects of the tail
    that ended in no shard. Each completed shard is passed to `on_shard` with its coverage."""
    from hvq_utils.data.records import ShardWriter, image_example
    start = done[-1]["end"] if done else 0
    size = config.image_size
    rejects: list[dict] = []
    writer = ShardWriter(out, split, max_bytes=config.shard_mb * 1e6, first_index=len(done))

    def complete(end: int) -> None:
        entry = writer.finish()
        if entry is not None:
            entry.update(bytes=(out / entry["file"]).stat().st_size, end=end, rejected=list(rejects))
            rejects.clear()
            on_shard(entry)

    # `results` is shared by both splits and runs on after this one's names: not strict.
    pairs = zip(names[start:], results, strict=False)
    with writer:
        for i, (name, (jpeg, reason)) in enumerate(pairs, start):
            if jpeg is None:
                rejects.append({"path": name, "reason": reason})
            else:
                writer.write(image_example(jpeg, size, size, name))
            bar.update()
            if writer.full:
                complete(i + 1)
        complete(len(names))
    return rejects


def prepare_images(
    src: str | os.PathLike,
    out: str | os.PathLike,
    config: Config,
    workers: int | None = None,
    sample_count: int = 400,
) -> dict:
    """Prepare an image folder (or "sample") into sharded TFRecords in `out`; returns the manifest.

    src: a folder searched recursively (the Kaggle competition folder works as it is), or
        "sample" for `sample_count` crops of scikit-image's photographs (see sample.py).
    config: its "data" group is used, recorded and compared (and its runtime recorded).
    workers: decoding processes; default all cores.

    The manifest holds counts {found, written, rejected, ignored}, rejected [{path, reason}],
    shards [{file, split, count, sha256}], splits {train, validation}, image_size, source.
    """
    out = Path(out)
    source = str(src)
    if source == "sample":
        from hvq_utils.data.sample import make_sample_folder

        src = make_sample_folder(
            out / SAMPLE_DIR, seed=0, count=sample_count,
            max_side=2 * config.image_size, min_side=config.min_image_side,
        )
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(
            f"--src {src} is not a directory; give a folder of images (searched recursively) or 'sample'"
        )
    out.mkdir(parents=True, exist_ok=True)
    paths, ignored = find_images(src, skip=out)
    if not paths:
        raise ValueError(
            f"--src {src} holds no images ({' '.join(sorted(IMAGE_EXTENSIONS))}, any case); "
            "point it at the folder that contains them"
        )
    listing = _listing_hash(src, paths)
    source_input = {"stage": "source", "hash": listing, "_path": str(src)}
    verdict = check_output(out, "prepare", config, {"source": source_input})
    if verdict.state == "finished":
        return verdict.manifest
    # TensorFlow (for the shard writer) loads only now: a refusal above is one quick line.
    from hvq_utils.data.records import SPLITS

    settings = ImageSettings.from_config(config)
    by_split = {s: [p for p in paths if split_of(p, config.val_fraction) == s] for s in SPLITS}
    key = _run_key(listing, config)
    journal = _resume(out, key)
    done = {s: [e for e in journal if e["split"] == s] for s in SPLITS}
    todo = {s: by_split[s][done[s][-1]["end"] if done[s] else 0 :] for s in SPLITS}
    files = [str(src / p) for s in SPLITS for p in todo[s]]

    def on_shard(entry: dict) -> None:
        journal.append(entry)
        _save_progress(out, key, journal)

    tail_rejects = []
    results = _results(files, settings, workers or _default_workers())
    try:
        with tqdm(total=len(paths), initial=len(paths) - len(files), unit="img", desc="prepare") as bar:
            for s in SPLITS:
                tail_rejects += _write_split_shards(
                    out, s, by_split[s], done[s], results, config, on_shard, bar
                )
    finally:
        results.close()  # ends the worker pool, also on an interrupt

    shards = sorted(journal, key=lambda e: (SPLITS.index(e["split"]), e["file"]))
    rejected = [r for e in shards for r in e["rejected"]] + tail_rejects
    splits = {s: sum(e["count"] for e in shards if e["split"] == s) for s in SPLITS}
    counts = {
        "found": len(paths),
        "written": sum(splits.values()),
        "rejected": len(rejected),
        "ignored": ignored,
    }
    manifest = write_manifest(
        out, "prepare", config, {"source": source_input},
        source=source,
        image_size=config.image_size,
        counts=counts,
        rejected=rejected,
        shards=[{k: e[k] for k in ("file", "split", "count", "sha256")} for e in shards],
        splits=splits,
    )
    log.info(_summary(out, counts, splits, shards, rejected, config.image_size))
    return manifest
