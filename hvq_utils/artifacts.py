"""Passing artifacts between notebooks: find the previous stage's output (a local directory,
an attached input, or a Kaggle dataset or notebook output fetched with kagglehub), choose
where to write, and publish a directory as a Kaggle dataset so the next notebook can attach it.

On Kaggle a notebook's inputs are datasets mounted under /kaggle/input and its outputs live in
/kaggle/working; elsewhere artifacts are plain directories (runs/<name> by default).

Kaggle handles (`locate`'s `path`, `publish`'s `handle`):
- "owner/slug" or "owner/slug/versions/3": a dataset (the newest version, or that one);
- "dataset:owner/slug[/versions/N]": the same, said explicitly;
- "notebook:owner/notebook-slug[/versions/N]": a notebook's saved output (the slug of its
  kernel, e.g. "notebook:you/hvq-02-train-vq-vae" for notebook 02, see release.notebook_handle);
- a kaggle.com address, https://www.kaggle.com/datasets/owner/slug or .../code/owner/slug.
A string of the bare form that names an existing local path is that local path ("runs/vqvae"
once it exists); a pathlib.Path is always local.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hvq_utils.config import STAGE_NUMBERS
from hvq_utils.loop import CHECKPOINTS
from hvq_utils.manifest import MANIFEST, RUN_FILE, ManifestError, read_manifest
from hvq_utils.release import notebook_handle
from hvq_utils.runtime import detect_platform, drive_root

log = logging.getLogger(__name__)

SEARCH_ROOTS = ("/kaggle/input", "/kaggle/working", "runs")
_DEPTHS = ("", "*/", "*/*/", "*/*/*/", "*/*/*/*/")  # where a manifest may sit under a root

# What `publish` leaves out, as kagglehub's `ignore_patterns`: fnmatch patterns matched against
# each file's path relative to the artifact directory ("*" also matches "/"; a pattern ending
# in "/" means everything under that top-level folder). Only what later stages read remains.
PUBLISH_IGNORE = (
    f"{CHECKPOINTS}/",  # training state for resuming (hvq_utils.loop); the final model is kept
    "tensorboard/",  # TensorBoard event files (log.csv, which is small, keeps the curves)
    "progress/",  # sample: each level's codes while a run is unfinished (codes.npz has them)
    "_sample_src/",  # prepare "sample": the generated source photographs (the shards hold them)
    RUN_FILE,  # the settings an unfinished run started with
    ".*",  # hidden files and folders at the top: atomic_output's .tmp-*, shards' .*.tfrecord.tmp,
    "*/.*",  # .prepare-progress.json, .ipynb_checkpoints, .git ... and the same further down
    "*.tmp",
    "*~",
    "__pycache__/",
    "*/__pycache__/*",
)


class ArtifactError(ManifestError):
    """An artifact cannot be fetched from or published to Kaggle; the message (one line) says
    what to attach, set or check."""


class CredentialsError(ArtifactError):
    """No Kaggle credentials where kagglehub or `kaggle_auth` looks for them."""


class NotFoundOnKaggle(ArtifactError):
    """Kaggle has no such dataset or notebook output (or not one these credentials may see)."""


class KaggleUnreachable(ArtifactError):
    """Kaggle could not be reached (no network, Internet off in the notebook, a time-out)."""


# --- Kaggle handles ---------------------------------------------------------------------------

_SLUG = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_REF = rf"{_SLUG}/{_SLUG}(?:/versions/\d+)?"
_HANDLE = re.compile(rf"^(?:(?P<kind>dataset|notebook):)?(?P<ref>{_REF})/?$")
_URL = re.compile(
    rf"^(?:https?://)?(?:www\.)?kaggle\.com/(?P<section>datasets|code)/(?P<ref>{_REF})(?:[/?#].*)?$"
)


@dataclass(frozen=True)
class KaggleHandle:
    """kind: "dataset" or "notebook"; ref: "owner/slug" or "owner/slug/versions/N" (what
    kagglehub takes); bare: written without a prefix (so it could have been a local path)."""

    kind: str
    ref: str
    bare: bool = False

    @property
    def owner_slug(self) -> str:
        return "/".join(self.ref.split("/")[:2])

    @property
    def versioned(self) -> bool:
        return "/versions/" in self.ref

    def __str__(self) -> str:
        return f"Kaggle {'notebook output' if self.kind == 'notebook' else 'dataset'} {self.ref}"


def parse_handle(value: str | os.PathLike, local_wins: bool = True) -> KaggleHandle | None:
    """The Kaggle handle `value` names (see the module docstring), or None for a local path
    (with `local_wins`, a bare "owner/slug" that exists locally is one)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if m := _URL.match(text):
        return KaggleHandle("dataset" if m["section"] == "datasets" else "notebook", m["ref"])
    m = _HANDLE.match(text)
    if m is None:
        return None
    if m["kind"] is None and local_wins and os.path.exists(text):
        return None
    return KaggleHandle(m["kind"] or "dataset", m["ref"], bare=m["kind"] is None)


_NETWORK = {
    "ConnectionError",  # requests' and the built-in one (refused, reset, aborted)
    "Timeout",
    "TimeoutError",
    "NewConnectionError",
    "MaxRetryError",
    "NameResolutionError",
    "gaierror",
}


def _failure(e: BaseException, doing: str, handle: KaggleHandle) -> ArtifactError | None:
    """The one-line error for an exception kagglehub raised while `doing` ("download" or
    "upload to") `handle`, or None to let it through. Decided by type names and HTTP status,
    which hold for kagglehub's and requests' errors across versions."""
    from hvq_utils.kaggle_auth import NO_CREDENTIALS, credentials_source

    names = {c.__name__ for c in type(e).__mro__}
    status = getattr(getattr(e, "response", None), "status_code", None)
    said = f" (HTTP {status})" if status else ""
    if names & _NETWORK:
        return KaggleUnreachable(
            f"cannot reach Kaggle to {doing} {handle} ({type(e).__name__}): on Kaggle turn on Internet "
            "(notebook Settings > Internet); elsewhere check the network; or attach the artifact as an "
            "input and leave the path on 'auto'"
        )
    backend = "BackendError" in names
    not_found = status == 404 or "NotFoundError" in names
    not_found |= backend and bool(re.search(r"not found|404|does not exist", str(e), re.I))
    if not_found and doing == "download":
        where = "kaggle.com/datasets/" if handle.kind == "dataset" else "kaggle.com/code/"
        how = (
            f"publish it first with artifacts.publish(out_dir, {handle.owner_slug!r})"
            if handle.kind == "dataset"
            else "run the notebook and save a version with its output (Save Version)"
        )
        private = (
            "; a private one needs Kaggle credentials, and none are set"
            if credentials_source() is None
            else "; a private one needs its owner's credentials"
        )
        local = f"; {handle.ref!r} is not a local directory either" if handle.bare else ""
        return NotFoundOnKaggle(
            f"{handle} not found{said}: check the handle ({where}{handle.ref}) or {how}{private}{local}"
        )
    if status in (401, 403) or names & {"UnauthenticatedError", "CredentialError"}:
        if credentials_source() is None:
            return CredentialsError(NO_CREDENTIALS)
        return ArtifactError(
            f"Kaggle refused to {doing} {handle}{said}: the credentials set are not valid, or not "
            f"{handle.owner_slug.split('/')[0]!r}'s (a private dataset, or terms not yet accepted)"
        )
    if backend or not_found or (status is not None and status >= 500):
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return ArtifactError(f"Kaggle could not {doing} {handle}{said}: {first_line}")
    return None


def _fetch(handle: KaggleHandle) -> Path:
    """Download (elsewhere) or attach (on Kaggle, under /kaggle/input) a handle with kagglehub."""
    from hvq_utils.kaggle_auth import ensure_credentials

    ensure_credentials(required=False)  # public data needs none; private data needs them
    import kagglehub

    get = kagglehub.dataset_download if handle.kind == "dataset" else kagglehub.notebook_output_download
    try:
        return Path(get(handle.ref))
    except Exception as e:
        error = _failure(e, "download", handle)
        if error is None:
            raise
        raise error from None


# --- finding artifacts ------------------------------------------------------------------------


def _manifests(roots) -> list[dict]:
    """Every readable manifest up to four folders under each of `roots`."""
    found = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for depth in _DEPTHS:
            for m in sorted(root.glob(f"{depth}{MANIFEST}")):
                try:
                    found.append(read_manifest(m.parent))
                except ManifestError:
                    continue
    return found


def _newest(stage: str, level: str | None, manifests: list[dict]) -> dict | None:
    fits = [m for m in manifests if m.get("stage") == stage and (level is None or m.get("level") == level)]
    return max(fits, key=lambda m: m["created"]) if fits else None


def _holding(manifests: list[dict]) -> str:
    if not manifests:
        return f"no {MANIFEST} up to four folders deep"
    kinds = sorted({m.get("stage", "?") + (f" ({m['level']})" if m.get("level") else "") for m in manifests})
    return "only " + ", ".join(kinds)


# The notebook whose output each prior level is (the other stages: config.STAGE_NUMBERS), for
# the example handle in messages; release.notebook_handle turns its number into the kernel's slug.
_PRIOR_WRITTEN_BY = {"top": "04", "middle": "05", "bottom": "06"}


def _written_by(stage: str, level: str | None = None) -> str | None:
    """The number of the notebook that writes `stage`'s artifact (a prior: `level`'s, else the top's)."""
    if stage == "train-prior":
        return _PRIOR_WRITTEN_BY.get(level or "top", "04")
    return STAGE_NUMBERS.get(stage)


def example_handle(stage: str, level: str | None = None) -> str:
    """The handle of the notebook output holding `stage`'s artifact (a prior: `level`'s, else the
    top's) for a user "you", e.g. "notebook:you/hvq-02-train-vq-vae" for "train-vqvae"; for a
    stage no notebook writes, the form "notebook:you/<notebook-slug>"."""
    number = _written_by(stage, level)
    return notebook_handle(number) if number else "notebook:you/<notebook-slug>"


def _picked(manifest: dict, what: str, origin: str = "") -> Path:
    log.info(
        "using %s artifact %s%s (created %s, hash %s)",
        what, manifest["_path"], origin, manifest.get("created"), str(manifest.get("hash"))[:8],
    )
    return Path(manifest["_path"])


def locate(
    stage: str,
    path: str | os.PathLike = "auto",
    roots: tuple[str, ...] = SEARCH_ROOTS,
    level: str | None = None,
) -> Path:
    """The directory of a `stage` artifact; for priors, `level` picks the level's.

    path:
    - "auto": the newest one found (up to four folders deep) under `roots` (attached Kaggle
      inputs, /kaggle/working, runs/);
    - a Kaggle handle (see the module docstring: "owner/slug", "owner/slug/versions/3",
      "notebook:owner/notebook-slug", a kaggle.com address): fetched with kagglehub (on Kaggle
      it is attached under /kaggle/input), and the newest artifact of the stage inside it;
    - a local directory: the artifact itself, or, when it has no manifest.json, the newest
      one inside it. A bare "owner/slug" string that exists locally is the local path.

    Logs one line: what was picked (path, origin, creation time, hash). Raises ManifestError
    (a wrong or missing local artifact) or ArtifactError (CredentialsError, NotFoundOnKaggle,
    KaggleUnreachable), each with a one-line message saying what to attach or set.
    """
    what = f"{stage!r}" + (f" ({level})" if level else "")
    if str(path) == "auto":
        found = _newest(stage, level, _manifests(roots))
        if found is None:
            raise ManifestError(
                f"no {what} artifact under {', '.join(roots)}; attach the earlier notebook's output "
                "(Kaggle: Add Input > your dataset or notebook output) or set the path parameter, "
                f"e.g. to {example_handle(stage, level)!r}"
            )
        return _picked(found, what)
    handle = parse_handle(path)
    if handle is not None:
        root = _fetch(handle)
        manifests = _manifests([root])
        found = _newest(stage, level, manifests)
        if found is None:
            raise ArtifactError(
                f"{handle} (at {root}) holds no {what} artifact but {_holding(manifests)}; "
                f"give the handle of the {stage} stage's output, e.g. {example_handle(stage, level)!r}"
            )
        return _picked(found, what, f" from {handle}")
    local = Path(path)
    if local.is_dir() and not (local / MANIFEST).is_file():
        manifests = _manifests([local])
        found = _newest(stage, level, manifests)
        if found is None:
            raise ManifestError(
                f"{local} holds no {what} artifact but {_holding(manifests)}; point this at the "
                f"output directory of the {stage} stage"
            )
        return _picked(found, what)
    found = read_manifest(local, stage)
    if level is not None and found.get("level") != level:
        raise ManifestError(f"{path} holds the {found.get('level')} prior; give the {level} prior's output")
    return _picked(found, what)


def resume_source(stage: str, value, level: str | None = None) -> Path | None:
    """The earlier output a training stage continues from (its `resume_from`), or None for None.

    A local folder is taken as it is, finished or cut off (checkpoints and no manifest yet, e.g.
    a Google Drive folder); a Kaggle handle is fetched with `locate`, so it must hold a finished
    output of `stage` (a notebook version's output, or a published dataset)."""
    if value is None:
        return None
    if parse_handle(value) is not None:
        return locate(stage, value, level=level)
    path = Path(value)
    if not path.is_dir():
        raise ArtifactError(
            f"{value} is not a directory; give the earlier output's folder, or a Kaggle handle such "
            f"as {example_handle(stage, level)!r}"
        )
    log.info("continuing from %s", path)
    return path


def output_dir(name: str, path: str | os.PathLike = "auto") -> Path:
    """Where a stage writes: `path`, or with "auto" /kaggle/working/<name> on Kaggle, else runs/<name>."""
    if str(path) != "auto":
        return Path(path)
    return Path("/kaggle/working" if detect_platform() == "kaggle" else "runs") / name


@dataclass(frozen=True)
class Storage:
    """Where a notebook's "auto" paths point. root None: the defaults (`locate` searches
    SEARCH_ROOTS, `output_dir` writes to /kaggle/working/<name> or runs/<name>); a folder (the
    notebooks' DRIVE on Colab): every stage reads its "auto" inputs from it and writes its "auto"
    output to <root>/<name> (data, vqvae, codes, prior-top ..., samples), so the next notebook and
    a re-run after a disconnect find them with no path edited. Paths given explicitly are kept."""

    root: Path | None = None

    @property
    def roots(self) -> tuple[str, ...]:
        return SEARCH_ROOTS if self.root is None else (str(self.root),)

    def locate(self, stage: str, path: str | os.PathLike = "auto", level: str | None = None) -> Path:
        """`locate`, searching only the root for "auto"."""
        try:
            return locate(stage, path, roots=self.roots, level=level)
        except ManifestError:
            if self.root is None or str(path) != "auto" or _newest(stage, level, _manifests(self.roots)):
                raise
        number = _written_by(stage, level)
        maker = f"notebook {number}" if number else "the notebook that makes it"
        what = f"{stage!r}" + (f" ({level})" if level else "")
        raise ManifestError(
            f"no {what} artifact under {self.root}; run {maker} with DRIVE = True first (it writes "
            "there), or set the path parameter"
        ) from None

    def output_dir(self, name: str, path: str | os.PathLike = "auto") -> Path:
        """`output_dir`, with "auto" under the root."""
        if self.root is None or str(path) != "auto":
            return output_dir(name, path)
        return self.root / name


def storage(drive: bool | str = False) -> Storage:
    """The notebooks' DRIVE parameter: False, the defaults; True (Colab only), Google Drive mounted
    and every "auto" path under /content/drive/MyDrive/hvq (a string: that folder; see
    `runtime.drive_root`). Raises RuntimeError off Colab when `drive` is set."""
    root = drive_root(drive)
    if root is not None:
        log.info("Google Drive: 'auto' inputs and outputs under %s", root)
    return Storage(root)


# --- publishing -------------------------------------------------------------------------------


@dataclass
class Published:
    """What `publish` did: the dataset handle, the files uploaded (relative to the artifact
    directory), their total bytes, and the files left out."""

    handle: str
    files: list[str]
    bytes: int
    left_out: list[str]


def _ignored(rel: str, patterns) -> bool:
    """kagglehub's rule: a "dir/" pattern means "dir/*"; fnmatch against the relative path."""
    return any(fnmatch.fnmatch(rel, p + "*" if p.endswith("/") else p) for p in patterns)


def upload_listing(artifact_dir: str | os.PathLike, patterns=PUBLISH_IGNORE) -> tuple[list[str], list[str]]:
    """(uploaded, left out): the files under `artifact_dir`, relative and sorted, split the way
    kagglehub's dataset_upload splits them with these ignore patterns."""
    root = Path(artifact_dir)
    kept, dropped = [], []
    for dir_path, _, names in os.walk(root):
        for name in names:
            rel = str((Path(dir_path) / name).relative_to(root))
            (dropped if _ignored(rel, patterns) else kept).append(rel)
    return sorted(kept), sorted(dropped)


def _listed_files(manifest: dict) -> list[str]:
    """The files a manifest says its artifact holds (what later stages read)."""
    files = [f for f in manifest.get("files", []) if isinstance(f, str)]
    files += [s["file"] for s in manifest.get("shards", []) if isinstance(s, dict) and "file" in s]
    return [MANIFEST, *files]


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def publish(artifact_dir: str | os.PathLike, handle: str, notes: str = "") -> Published:
    """Upload a finished artifact directory as a new version of a Kaggle dataset (created,
    private, on the first upload), e.g. handle="your-name/hvq-vqvae"; the next notebook
    attaches it (Add Input) or passes the handle to `locate`.

    Only what later stages need goes up: PUBLISH_IGNORE leaves out checkpoints/, tensorboard/,
    run.json, sample's progress/, hidden and temporary files. notes: the version notes
    (default: stage and hash). Needs Kaggle credentials (see hvq_utils.kaggle_auth). Returns
    what was uploaded and logs one line. Raises ManifestError for an unfinished artifact
    (no manifest.json) or one missing a file its manifest lists, ArtifactError (one line) for
    a bad handle, no credentials, no network or a refusal.
    """
    manifest = read_manifest(artifact_dir)
    target = parse_handle(handle, local_wins=False)
    if target is None or target.kind != "dataset" or target.versioned:
        raise ArtifactError(
            f"publish needs a dataset handle 'owner/slug' (your Kaggle username and a new or existing "
            f"dataset's slug), not {handle!r}; each upload makes a new version"
        )
    files, left_out = upload_listing(artifact_dir)
    missing = [f for f in _listed_files(manifest) if f not in files]
    if missing:
        raise ManifestError(
            f"{artifact_dir} lacks {missing[0]}, which its manifest lists (or it is left out as temporary); "
            "re-run the stage that made it"
        )
    from hvq_utils.kaggle_auth import ensure_credentials

    ensure_credentials(required=True)
    import kagglehub

    try:
        kagglehub.dataset_upload(
            target.ref,
            str(artifact_dir),
            version_notes=notes or f"{manifest['stage']} {manifest['hash'][:8]}",
            ignore_patterns=list(PUBLISH_IGNORE),
        )
    except Exception as e:
        error = _failure(e, "upload to", target)
        if error is None:
            raise
        raise error from None
    total = sum((Path(artifact_dir) / f).stat().st_size for f in files)
    folders = [p for p in PUBLISH_IGNORE if p.endswith("/") and any(f.startswith(p) for f in left_out)]
    others = sum(not any(f.startswith(d) for d in folders) for f in left_out)
    named = folders + ([f"{others} temporary, hidden or run files"] if others else [])
    skipped = f"; left out {len(left_out)} files: {', '.join(named)}"
    log.info(
        "published %s (hash %s) as %s: %d files, %s%s",
        manifest["stage"], manifest["hash"][:8], target, len(files), _size(total),
        skipped if left_out else "",
    )
    return Published(target.ref, files, total, left_out)
