"""One manifest writer and reader for every stage's artifact directory, the one rule that
decides whether an output is finished, may resume or must be refused, and the one atomic
file writer every stage uses.

A manifest says what made an artifact (stage, settings, package version), what it was made
from (its inputs' manifest hashes) and what it holds. Its "settings" are {group: values}
for the stage's own group of config keys and every group upstream of it (what its inputs
fixed), plus "runtime" (recorded only). Its `hash` is the SHA-256 of the canonical JSON of
everything else but the creation time, so two runs that made the same thing from the same
inputs carry the same hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hvq_utils.config import STAGE_GROUPS, STAGE_RECORDS, Config, resumable_keys

MANIFEST = "manifest.json"
RUN_FILE = "run.json"  # what an unfinished output was started with: its own settings and inputs
log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it is flushed to disk and
    renamed into place, so a kill never leaves half a file under `path`. The temporary name
    keeps the suffix (Keras and NumPy choose formats by it) and starts with a dot."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through `atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def stage_settings(config: Config, stage: str) -> dict[str, dict]:
    """{group: values} a stage's manifest records: its own group, every group upstream of it
    (the values its inputs fixed, once the stage has adopted them) and the runtime."""
    return {g: config.section(g) for g in [*STAGE_RECORDS[stage], "runtime"]}


def write_manifest(
    out_dir: str | os.PathLike,
    stage: str,
    config: Config,
    inputs: dict[str, dict] | None = None,
    **contents,
) -> dict:
    """Write `out_dir/manifest.json` and return it.

    stage: e.g. "prepare", "train-vqvae"; config: the stage's config after adopting its
    inputs' settings (`stage_settings` says what of it is kept); inputs: {role: manifest}
    of the artifacts this one was made from (only their stage and hash are kept); contents:
    anything else the stage records (counts, shapes, files, metrics).
    """
    from hvq_utils import __version__

    manifest = {
        "stage": stage,
        "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": stage_settings(config, stage),
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



def own_settings(manifest: dict) -> dict:
    """The values of the group a manifest's stage owns."""
    return manifest.get("settings", {}).get(STAGE_GROUPS[manifest["stage"]], {})


@dataclass
class Verdict:
    """What `check_output` decided for an output directory.

    state: "new" (nothing there yet), "resume" (an unfinished run, or a finished one asked
    for more steps) or "finished" (made with exactly these settings and inputs: nothing to
    do); manifest: the finished output's manifest, else None.
    """

    state: str
    manifest: dict | None = None


def _differences(out: Path, stage: str, old: dict, new: dict) -> tuple[str | None, bool]:
    """(refusal message or None, whether only resumable keys differ) between two records of
    {"settings": own group, "inputs": {role: hash}}."""
    for role, h in new["inputs"].items():
        if old["inputs"].get(role) != h:
            return (
                f"{out} holds a {stage} output made from another {role} (hash "
                f"{str(old['inputs'].get(role))[:8]}, now {str(h)[:8]}); use a new --out, "
                "or delete it to start over",
                False,
            )
    resumable = resumable_keys()
    changed = [k for k, v in new["settings"].items() if old["settings"].get(k) != v]
    fixed = [k for k in changed if k not in resumable]
    if fixed:
        k = fixed[0]
        return (
            f"{out} holds a {stage} output made with {k}={old['settings'].get(k)!r}, not "
            f"{new['settings'][k]!r}; run with {k}={old['settings'].get(k)!r} to resume or reuse "
            "it, or use a new --out",
            False,
        )
    return None, bool(changed)


def check_output(
    out_dir: str | os.PathLike,
    stage: str,
    config: Config,
    inputs: dict[str, dict],
    identity: dict | None = None,
    record: bool = True,
) -> Verdict:
    """The one rule, for every stage: may `stage` write into `out_dir` with `config` (its own
    group is compared) and `inputs` ({role: manifest}, compared by hash)? identity: values
    that tell outputs of one stage apart beyond its settings (a prior's level), compared
    like settings and stored at the top of the manifest.

    - `out_dir` holds this stage's finished output made with the same settings and inputs:
      "finished" (the caller returns its manifest, and nothing downstream changes);
    - only resumable keys differ (more steps), or an unfinished run of the same settings
      and inputs is there: "resume";
    - nothing is there: "new";
    - anything else (another stage's output, other settings of this stage's group, other
      inputs) raises ManifestError naming the key or input, before any work.
    For "new" and "resume", `run.json` records the settings and inputs first (unless
    record=False: checking an earlier, read-only output a run resumes from).
    """
    out = Path(out_dir)
    identity = identity or {}
    wanted = {
        "stage": stage,
        "settings": {**config.section(STAGE_GROUPS[stage]), **identity},
        "inputs": {role: m.get("hash") for role, m in inputs.items()},
    }
    state = "new"
    if (out / MANIFEST).is_file():
        try:
            done = read_manifest(out)
        except ManifestError:
            done = None  # half-written or edited: treated like an unfinished run below
        if done is not None:
            if done.get("stage") != stage:
                raise ManifestError(
                    f"--out {out} holds a {done.get('stage')!r} artifact; give {stage} a directory of its own"
                )
            old = {
                "settings": {**own_settings(done), **{k: done.get(k) for k in identity}},
                "inputs": {r: m.get("hash") for r, m in done.get("inputs", {}).items()},
            }
            refusal, more = _differences(out, stage, old, wanted)
            if refusal:
                raise ManifestError(refusal)
            if not more:
                log.info("%s already holds this finished %s output; nothing to do", out, stage)
                return Verdict("finished", done)
            state = "resume"
    if state == "new" and (out / RUN_FILE).is_file():
        try:
            old = json.loads((out / RUN_FILE).read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old.get("stage") == stage:
            refusal, _ = _differences(out, stage, old, wanted)
            if refusal:
                raise ManifestError(refusal)
            state = "resume"
    if record:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / RUN_FILE, json.dumps(wanted, indent=2).encode())
    return Verdict(state)
