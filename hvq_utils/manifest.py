"""One manifest writer and reader for every stage's artifact directory.

A manifest says what made an artifact (stage, config, package version), what it was made
from (its inputs' manifest hashes) and what it holds. Its `hash` is the SHA-256 of the
canonical JSON of everything else but the creation time, so two runs that made the same
thing from the same inputs carry the same hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """An artifact is missing, of the wrong stage, or does not fit what it is used with."""


def _canonical(d: dict) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode()


def content_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k not in ("hash", "created")}
    return hashlib.sha256(_canonical(body)).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file and a rename, so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(
    out_dir: str | os.PathLike,
    stage: str,
    config: dict | None = None,
    inputs: dict[str, dict] | None = None,
    **contents,
) -> dict:
    """Write `out_dir/manifest.json` and return it.

    stage: e.g. "prepare", "train-vqvae"; config: Config.to_dict(); inputs: {role: manifest}
    of the artifacts this one was made from (only their stage and hash are kept); contents:
    anything else the stage records (counts, shapes, files, metrics).
    """
    from hvq_utils import __version__

    manifest = {
        "stage": stage,
        "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config or {},
        "inputs": {
            role: {"stage": m.get("stage"), "hash": m.get("hash"), "path": m.get("_path")}
            for role, m in (inputs or {}).items()
        },
        **contents,
    }
    manifest["hash"] = content_hash(manifest)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(out_dir) / MANIFEST, json.dumps(manifest, indent=2, default=str).encode())
    return manifest


def read_manifest(artifact_dir: str | os.PathLike, stage: str | None = None) -> dict:
    """Read and check an artifact's manifest; `_path` is added (the directory it came from).

    Raises ManifestError with what to do when it is missing, unreadable, altered, or made by
    another stage than `stage`.
    """
    path = Path(artifact_dir) / MANIFEST
    if not path.is_file():
        want = f" of stage {stage!r}" if stage else ""
        raise ManifestError(
            f"{artifact_dir} has no {MANIFEST}; point this at an artifact directory{want} made by hvq_utils"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path} is not readable JSON ({e}); re-run the stage that made it") from None
    if manifest.get("hash") != content_hash(manifest):
        raise ManifestError(
            f"{path} was edited after it was written (its hash does not match); re-run the stage that made it"
        )
    if stage is not None and manifest.get("stage") != stage:
        raise ManifestError(
            f"{artifact_dir} holds a {manifest.get('stage')!r} artifact, not {stage!r}; "
            f"give the output directory of the {stage} stage"
        )
    manifest["_path"] = str(artifact_dir)
    return manifest


def describe(manifest: dict) -> str:
    """A short name for error messages: 'train-vqvae at runs/vq (hash 1a2b3c4d)'."""
    return f"{manifest.get('stage')} at {manifest.get('_path', '?')} (hash {str(manifest.get('hash'))[:8]})"

