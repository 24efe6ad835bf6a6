"""Passing artifacts between notebooks: find the previous stage's output, choose where to write,
and publish a directory as a Kaggle dataset so the next notebook can attach it.

On Kaggle a notebook's inputs are datasets mounted under /kaggle/input and its outputs live in
/kaggle/working; elsewhere artifacts are plain directories (runs/<name> by default).
"""

from __future__ import annotations

import os
from pathlib import Path

from hvq_utils.manifest import ManifestError, read_manifest
from hvq_utils.runtime import detect_platform

SEARCH_ROOTS = ("/kaggle/input", "/kaggle/working", "runs")


def locate(
    stage: str,
    path: str | os.PathLike = "auto",
    roots: tuple[str, ...] = SEARCH_ROOTS,
    level: str | None = None,
) -> Path:
    """The directory of a `stage` artifact: `path` itself, or with "auto" the newest one found
    (up to four folders deep) under `roots`; for priors, `level` picks the level's. Raises
    ManifestError saying how to attach one."""
    what = f"{stage!r}" + (f" ({level})" if level else "")
    if str(path) != "auto":
        found = read_manifest(path, stage)
        if level is not None and found.get("level") != level:
            raise ManifestError(
                f"{path} holds the {found.get('level')} prior; give the {level} prior's output"
            )
        return Path(path)
    found = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for depth in ("", "*/", "*/*/", "*/*/*/", "*/*/*/*/"):
            for m in root.glob(f"{depth}manifest.json"):
                try:
                    manifest = read_manifest(m.parent, stage)
                except ManifestError:
                    continue
                if level is None or manifest.get("level") == level:
                    found.append(manifest)
    if not found:
        raise ManifestError(
            f"no {what} artifact under {', '.join(roots)}; attach the earlier notebook's output "
            "(Kaggle: Add Input > your dataset or notebook output) or set the path parameter"
        )
    return Path(max(found, key=lambda m: m["created"])["_path"])


def output_dir(name: str, path: str | os.PathLike = "auto") -> Path:
    """Where a stage writes: `path`, or with "auto" /kaggle/working/<name> on Kaggle, else runs/<name>."""
    if str(path) != "auto":
        return Path(path)
    return Path("/kaggle/working" if detect_platform() == "kaggle" else "runs") / name


def publish(artifact_dir: str | os.PathLike, handle: str, notes: str = "") -> None:
    """Upload an artifact directory as a (new version of a) Kaggle dataset, e.g.
    handle="your-name/hvq-vqvae"; needs Kaggle credentials (on Kaggle: Add-ons > Secrets)."""
    import kagglehub

    manifest = read_manifest(artifact_dir)
    kagglehub.dataset_upload(
        handle, str(artifact_dir), version_notes=notes or f"{manifest['stage']} {manifest['hash'][:8]}"
    )
