"""The release: where the package is published, and the notebooks and Kaggle kernels made from it.

    python -m hvq_utils.release notebooks [--check]      # rewrite the notebooks' set-up parts
    python -m hvq_utils.release kaggle-push --owner NAME  # publish the wheel and seven kernels

The one place for the public repository, the release tag (from the package version), the
Kaggle owner, the tensorflow-cpu that Colab's TPU runtime needs, and the table of notebooks
(Kaggle kernel, machine, Colab accelerator, which notebooks' outputs each one reads).

`notebooks` rewrites, in every notebook, the install cell (the first code cell), the badge line
of the first markdown cell and the notebook metadata (Colab and Kaggle accelerators), and
writes kaggle/<notebook>/kernel-metadata.json, whose code_file points at ../../notebooks/ (the
kaggle CLI resolves code_file against the metadata's folder). Other cells are left alone, so it
can be re-run after any edit. `kaggle-push` stages copies under build/kaggle/ and calls the
`kaggle` command (installed separately: pip install "kaggle>=2.2.5"); it reads no credential itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvq_utils import __version__
from hvq_utils.prepare import COMPETITION

REPO_OWNER = "hvq-project"
REPO_NAME = "hvq"
REPO_URL = f"https://github.com/{REPO_OWNER}/{REPO_NAME}"
VERSION = __version__
TAG = f"v{VERSION}"
GIT_SOURCE = f"hvq_utils @ git+{REPO_URL}@{TAG}"  # pip's requirement for the tagged release

KAGGLE_OWNER = "hvq-project"  # the default owner of the kernels and the wheel dataset
WHEEL_DATASET = "hvq-utils-wheel"

# Colab's TPU runtime ships JAX and no TensorFlow; the tf.data readers need TensorFlow. 2.20.0 is
# what the other platforms ship, has wheels for Python 3.13 and accepts Colab TPU's h5py 3.16 and
# protobuf 7 (2.21 requires h5py < 3.15, so pip would downgrade Colab's); data/platforms.json.
TENSORFLOW_CPU = "2.20.0"

T4 = "NvidiaTeslaT4"  # Kaggle's "GPU T4 x2"
TPU_V5E8 = "TpuV5E8"  # Kaggle's "TPU VM v5e-8"
# Kaggle machine shape -> the notebook metadata value of a notebook saved on Kaggle.
KAGGLE_NOTEBOOK_ACCELERATOR = {None: "none", T4: "nvidiaTeslaT4", TPU_V5E8: "tpuV5e8"}
# Colab gpuType -> Colab's accelerator (runtime type).
COLAB_ACCELERATOR = {"T4": "GPU", "V5E1": "TPU"}

BADGE_MARK = "colab.research.google.com/assets/colab-badge.svg"
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"


@dataclass(frozen=True)
class Notebook:
    """One notebook of the series.

    file: its name in notebooks/; title: its Kaggle title, whose slug is the kernel's;
    machine: the Kaggle machine shape (None: CPU); colab: Colab's gpuType (None: CPU);
    reads: the numbers of the notebooks whose outputs it locates (its Kaggle kernel sources);
    competition: it reads the competition's data.
    """

    file: str
    title: str
    machine: str | None
    colab: str | None
    reads: tuple[str, ...] = ()
    competition: bool = False

    @property
    def number(self) -> str:
        return self.file[:2]

    @property
    def name(self) -> str:
        """The notebook's file name without .ipynb, also its folder under kaggle/."""
        return self.file.removesuffix(".ipynb")

    @property
    def slug(self) -> str:
        """The Kaggle kernel slug: the title as Kaggle slugifies it (lower case, runs of other
        characters as one hyphen), so the title resolves to the id."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


# 03 encodes with the frozen VQ-VAE: minutes on a GPU, so it spares the TPU quota.
NOTEBOOKS = (
    Notebook("01_prepare_data.ipynb", "HVQ 01 Prepare data", None, None, competition=True),
    Notebook("02_train_vqvae.ipynb", "HVQ 02 Train VQ-VAE", TPU_V5E8, "V5E1", ("01",)),
    Notebook("03_encode_latents.ipynb", "HVQ 03 Encode latents", T4, "T4", ("01", "02")),
    Notebook("04_train_top_prior.ipynb", "HVQ 04 Train top prior", T4, "T4", ("03",)),
    Notebook("05_train_middle_prior.ipynb", "HVQ 05 Train middle prior", T4, "T4", ("03",)),
    Notebook("06_train_bottom_prior.ipynb", "HVQ 06 Train bottom prior", T4, "T4", ("03",)),
    Notebook("07_sample.ipynb", "HVQ 07 Sample", T4, "T4", ("01", "02", "04", "05", "06")),
)
BY_NUMBER = {nb.number: nb for nb in NOTEBOOKS}


class ReleaseError(RuntimeError):
    """A release step that cannot go on; the message says why and what to do."""


# ---- what the notebooks hold -------------------------------------------------------------


INSTALL_CELL = f"""\
# Set-up on Kaggle and Colab, written by `python -m hvq_utils.release notebooks`. Installs
# hvq_utils {VERSION} unless it is installed: from the wheel dataset {KAGGLE_OWNER}/{WHEEL_DATASET}
# when it is attached (works with the Internet off), else from HVQ_SOURCE (needs the Internet).
# Where TensorFlow is missing (Colab's TPU runtime) it adds tensorflow-cpu for the data readers;
# JAX stays the backend. pip may add packages but never changes one the platform ships: every
# installed distribution is held at its version.
HVQ_SOURCE = "{GIT_SOURCE}"  # or your fork's git+https URL
import glob
import importlib
import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys
import tempfile

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

HVQ_VERSION = "{VERSION}"
held = pathlib.Path(tempfile.gettempdir()) / "hvq-held.txt"  # pip constraints: what is installed
pins = {{}}
for dist in importlib.metadata.distributions():
    try:
        Version(dist.version)  # pip refuses a constraints file with a malformed version in it
    except (InvalidVersion, TypeError):
        continue
    if dist.metadata["Name"]:
        pins.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)  # the first on sys.path
pins.pop("hvq-utils", None)  # another version of hvq_utils is what gets replaced
held.write_text("".join(f"{{name}}=={{version}}\\n" for name, version in sorted(pins.items())))


def hvq_pip_install(requirement):
    \"\"\"pip install `requirement` within `held`; True if it worked, else pip's last lines are shown.\"\"\"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "-c", str(held), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(*(done.stdout + done.stderr).strip().splitlines()[-6:], sep="\\n")
    importlib.invalidate_caches()
    return done.returncode == 0


try:
    installed = importlib.metadata.version("hvq_utils")
except importlib.metadata.PackageNotFoundError:
    installed = None
if installed != HVQ_VERSION:
    found = []
    for depth in ("*", "*/*", "*/*/*", "*/*/*/*"):  # <dataset>/ and deeper layouts of attached inputs
        found += glob.glob(f"/kaggle/input/{{depth}}/hvq_utils-{{HVQ_VERSION}}-*.whl")
    if not any(hvq_pip_install(source) for source in [*sorted(found)[:1], HVQ_SOURCE]):
        raise SystemExit(
            f"hvq set-up: hvq_utils {{HVQ_VERSION}} could not be installed ("
            f"{{'the attached wheel failed' if found else 'no wheel attached'}}, and {{HVQ_SOURCE}} failed): "
            "attach the Kaggle dataset {KAGGLE_OWNER}/{WHEEL_DATASET} (Add Input), or turn the Internet on "
            "(Kaggle: Settings > Internet on), or set HVQ_SOURCE to a repository URL that is reachable"
        )
if importlib.util.find_spec("tensorflow") is None:
    added = hvq_pip_install("tensorflow-cpu=={TENSORFLOW_CPU}")
    if not added or importlib.util.find_spec("tensorflow") is None:
        raise SystemExit(
            "hvq set-up: tensorflow-cpu=={TENSORFLOW_CPU}, which the data readers need, could not be added "
            "beside this runtime's packages (pip's lines are above): turn the Internet on, or use a runtime "
            "that ships TensorFlow (Colab's GPU or CPU runtime)"
        )"""


def github_url(nb: Notebook) -> str:
    """The notebook's file on GitHub at the release tag."""
    return f"{REPO_URL}/blob/{TAG}/notebooks/{nb.file}"


def colab_url(nb: Notebook) -> str:
    return f"https://colab.research.google.com/github/{REPO_OWNER}/{REPO_NAME}/blob/{TAG}/notebooks/{nb.file}"


def kaggle_import_url(nb: Notebook) -> str:
    """Kaggle's "import a notebook from GitHub" link (a new notebook; inputs are attached by hand)."""
    return f"https://kaggle.com/kernels/welcome?src={github_url(nb)}"


def kernel_url(nb: Notebook, owner: str = KAGGLE_OWNER) -> str:
    """The published kernel on Kaggle (after kaggle-push), with its inputs attached."""
    return f"https://www.kaggle.com/code/{owner}/{nb.slug}"


def notebook_handle(number: str, owner: str = "you") -> str:
    """The Kaggle handle of notebook `number`'s saved output, "notebook:<owner>/<slug>", as
    `hvq_utils.artifacts.locate` takes it: the kernel id that kernel_metadata (and so
    kaggle/*/kernel-metadata.json) gives it under `owner`. The default owner "you" is the
    placeholder that messages and the README show."""
    nb = BY_NUMBER.get(number)
    if nb is None:
        raise ValueError(f"no notebook {number!r}; use one of {', '.join(BY_NUMBER)}")
    return f"notebook:{kernel_metadata(nb, owner)['id']}"


def badge(nb: Notebook) -> str:
    """The markdown line of "Open in Colab" and "Open in Kaggle" badges, both at the tag."""
    return (
        f"[![Open In Colab](https://{BADGE_MARK})]({colab_url(nb)}) "
        f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle_import_url(nb)})"
    )


def notebook_metadata(nb: Notebook) -> dict:
    """The notebook-level metadata keys the generator owns: Colab's runtime type and Kaggle's
    accelerator. Never a Kaggle docker image (a pinned image overrides the TPU VM)."""
    colab: dict = {"provenance": []}
    meta: dict = {"colab": colab}
    if nb.colab:
        colab["gpuType"] = nb.colab
        meta["accelerator"] = COLAB_ACCELERATOR[nb.colab]
    meta["kaggle"] = {
        "accelerator": KAGGLE_NOTEBOOK_ACCELERATOR[nb.machine],
        "isGpuEnabled": nb.machine == T4,
        "isInternetEnabled": True,
        "language": "python",
        "sourceType": "notebook",
    }
    return meta


def wheel_dataset(owner: str = KAGGLE_OWNER) -> str:
    return f"{owner}/{WHEEL_DATASET}"


def kernel_metadata(
    nb: Notebook, owner: str = KAGGLE_OWNER, code_file: str | None = None, private: bool = True
) -> dict:
    """kernel-metadata.json for `nb` under `owner`: the wheel dataset, the competition (01) and
    the kernels whose outputs it reads attached; code_file relative to the metadata's folder
    (default: kaggle/<name>/ -> ../../notebooks/<file>). No docker_image: a pinned image would
    override the TPU VM."""
    meta = {
        "id": f"{owner}/{nb.slug}",
        "title": nb.title,
        "code_file": code_file or f"../../notebooks/{nb.file}",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": private,
        "enable_gpu": nb.machine == T4,
        "enable_tpu": nb.machine == TPU_V5E8,
        "enable_internet": True,
        "dataset_sources": [wheel_dataset(owner)],
        "competition_sources": [COMPETITION] if nb.competition else [],
        "kernel_sources": [f"{owner}/{BY_NUMBER[n].slug}" for n in nb.reads],
        "model_sources": [],
    }
    if nb.machine:
        meta["machine_shape"] = nb.machine
    return meta


def dataset_metadata(owner: str = KAGGLE_OWNER) -> dict:
    """dataset-metadata.json of the wheel dataset."""
    return {"title": "hvq-utils wheel", "id": wheel_dataset(owner), "licenses": [{"name": "MIT"}]}


# ---- the generator -----------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """Text as a notebook stores it: lines, each but the last with its newline."""
    return text.splitlines(keepends=True)


def with_badge(markdown: str, line: str) -> str:
    """`markdown` (a title line first) with `line` below the title, replacing an earlier badge line."""
    title, *rest = markdown.split("\n")
    rest = [r for r in rest if BADGE_MARK not in r]
    while rest and not rest[0].strip():
        rest.pop(0)
    return "\n".join([title, "", line, "", *rest]) if rest else "\n".join([title, "", line])


def render_notebook(nb: Notebook, notebook: dict) -> dict:
    """`notebook` (its JSON) with the install cell, badge and metadata of `nb`; other cells as they were."""
    cells = notebook["cells"]
    code = next((c for c in cells if c["cell_type"] == "code"), None)
    markdown = next((c for c in cells if c["cell_type"] == "markdown"), None)
    if code is None or markdown is None:
        raise ReleaseError(f"{nb.file} needs a markdown cell (the title) and a code cell (the install cell)")
    code.update(source=_lines(INSTALL_CELL), outputs=[], execution_count=None)
    markdown["source"] = _lines(with_badge("".join(markdown["source"]), badge(nb)))
    meta = notebook["metadata"]
    meta.pop("accelerator", None)
    meta.update(notebook_metadata(nb))
    return notebook


def notebook_text(notebook: dict) -> str:
    """As Jupyter writes a notebook: one-space indents, sorted keys, UTF-8, a final newline."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def metadata_text(meta: dict) -> str:
    return json.dumps(meta, indent=2) + "\n"


def generated_files(root: Path) -> dict[Path, str]:
    """Every file the generator owns under `root`, with the text it should have."""
    files = {}
    for nb in NOTEBOOKS:
        path = root / "notebooks" / nb.file
        if not path.is_file():
            raise ReleaseError(f"{path} is missing; run this from the repository root or pass --root")
        notebook = render_notebook(nb, json.loads(path.read_text(encoding="utf-8")))
        files[path] = notebook_text(notebook)
        files[root / "kaggle" / nb.name / KERNEL_METADATA] = metadata_text(kernel_metadata(nb))
    return files


def write_generated(root: Path, check: bool = False) -> list[Path]:
    """Bring the generated files up to date (with `check`, only report); returns those that differ."""
    stale = []
    for path, text in generated_files(root).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    return stale


# ---- kaggle-push -------------------------------------------------------------------------


def kaggle_credentials_present(environ: dict | None = None, home: Path | None = None) -> bool:
    """Whether the kaggle CLI (2.x) has credentials to use; looks only whether they exist and
    reads none: KAGGLE_API_TOKEN, or KAGGLE_USERNAME with KAGGLE_KEY, in the environment;
    kaggle.json in $KAGGLE_CONFIG_DIR, ~/.kaggle or ~/.config/kaggle; ~/.kaggle/access_token;
    or the ~/.kaggle/credentials.json that `kaggle auth login` writes."""
    env = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    folders = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else [home / ".kaggle", xdg]
    files = [f / "kaggle.json" for f in folders]
    files += [home / ".kaggle" / name for name in ("access_token", "access_token.txt", "credentials.json")]
    return any(f.is_file() for f in files)


def build_wheel(root: Path, out: Path) -> Path:
    """Build hvq_utils' wheel from the checkout at `root` into `out` (emptied first)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(root), "-w", str(out)]
    print("$", " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=root).returncode != 0:
        raise ReleaseError("building the wheel failed (see pip's output above)")
    return find_wheel(out)


def find_wheel(folder: Path) -> Path:
    wheels = sorted(folder.glob(f"hvq_utils-{VERSION}-*.whl"))
    if not wheels:
        raise ReleaseError(f"no hvq_utils-{VERSION}-*.whl in {folder}")
    return wheels[-1]


# kaggle-push saves kernels with `kaggle kernels push --no-run`, which kaggle 2.2.5 added: an older
# CLI stops at that flag ("unrecognized arguments"), after the wheel dataset is already uploaded.
KAGGLE_CLI_MIN = "2.2.5"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def kaggle_cli_version(executable: str) -> str:
    """The version the `kaggle` command at `executable` reports with --version ("Kaggle CLI 2.2.5";
    1.x says "Kaggle API 1.7.4.5"). Raises ReleaseError (one line) when it reports none."""
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=120)
        said = (done.stdout + done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        said = f"{type(e).__name__}: {e}"
    found = re.search(r"Kaggle (?:CLI|API) (\d+(?:\.\d+)*)", said)
    if found is None:
        first = (said.splitlines() or ["nothing"])[0][:200]
        raise ReleaseError(
            f"cannot tell the version of the `kaggle` command at {executable} (`kaggle --version` said: "
            f"{first}); kaggle-push needs kaggle >= {KAGGLE_CLI_MIN}: "
            f"pip install -U \"kaggle>={KAGGLE_CLI_MIN}\""
        )
    return found[1]


def check_kaggle_cli(executable: str) -> str:
    """The kaggle CLI's version, or ReleaseError (one line) when it is older than KAGGLE_CLI_MIN."""
    version = kaggle_cli_version(executable)
    if _version_tuple(version) < _version_tuple(KAGGLE_CLI_MIN):
        raise ReleaseError(
            f"the `kaggle` command at {executable} is kaggle {version}, which lacks `kernels push --no-run`; "
            f"kaggle-push needs {KAGGLE_CLI_MIN} or newer: pip install -U \"kaggle>={KAGGLE_CLI_MIN}\""
        )
    return version


class Kaggle:
    """Runs the `kaggle` command. Each call prints the command and its output; a non-zero
    exit or an "error" line in the output raises ReleaseError (except with check=False)."""

    def __init__(self, executable: str):
        self.executable = executable

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        print("$ kaggle", " ".join(args), flush=True)
        done = subprocess.run([self.executable, *args], capture_output=True, text=True)
        print((done.stdout + done.stderr).rstrip(), flush=True)
        failed = done.returncode != 0 or "error" in (done.stdout + done.stderr).lower()
        if check and failed:
            raise ReleaseError(f"`kaggle {' '.join(args[:2])}` failed (its output is above)")
        return done


def push_wheel(kaggle: Kaggle, wheel: Path, stage: Path, owner: str, public: bool, wait_s: float) -> None:
    """Publish `wheel` as (a new version of) the dataset <owner>/hvq-utils-wheel and wait until
    Kaggle has it ready, so the kernels can attach it."""
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    shutil.copy2(wheel, stage / wheel.name)
    (stage / DATASET_METADATA).write_text(metadata_text(dataset_metadata(owner)))
    ref = wheel_dataset(owner)
    if kaggle("datasets", "status", ref, check=False).returncode == 0:
        kaggle("datasets", "version", "-p", str(stage), "-m", f"hvq_utils {VERSION}", "-r", "skip")
    else:
        kaggle("datasets", "create", "-p", str(stage), "-r", "skip", *(["--public"] if public else []))
    deadline = time.monotonic() + wait_s
    while kaggle("datasets", "status", ref, check=False).stdout.strip() != "ready":
        if time.monotonic() > deadline:
            raise ReleaseError(f"{ref} is not ready after {wait_s:.0f} s; push again when it is")
        time.sleep(10)


def stage_kernel(nb: Notebook, root: Path, stage: Path, owner: str, public: bool) -> Path:
    """kaggle/<name>/ for `owner` under `stage`: a copy of the notebook and its metadata."""
    folder = stage / nb.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(root / "notebooks" / nb.file, folder / nb.file)
    meta = kernel_metadata(nb, owner, code_file=nb.file, private=not public)
    (folder / KERNEL_METADATA).write_text(metadata_text(meta))
    return folder


def kaggle_push(
    root: Path,
    owner: str,
    stage: Path,
    wheel: Path | None = None,
    run: Sequence[str] = (),
    public: bool = False,
    wait_s: float = 600,
) -> None:
    """Publish the wheel dataset and the seven kernels under `owner`. Kernels are saved without
    running (Kaggle would run all seven at once, before their inputs exist) except those
    numbered in `run`. Everything is checked before anything is uploaded: the owner, `run`, the
    `kaggle` command (on PATH, kaggle >= KAGGLE_CLI_MIN) and its credentials, the generated files."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", owner):
        raise ReleaseError(f"--owner {owner!r} is not a Kaggle user name (letters, digits, - and _)")
    unknown = sorted(set(run) - set(BY_NUMBER))
    if unknown:
        raise ReleaseError(f"--run {' '.join(unknown)}: no such notebook; use numbers 01 to 07")
    executable = shutil.which("kaggle")
    if executable is None:
        raise ReleaseError(
            "kaggle-push needs the `kaggle` command, and none is on PATH: "
            f"pip install \"kaggle>={KAGGLE_CLI_MIN}\""
        )
    if not kaggle_credentials_present():
        raise ReleaseError(
            "no Kaggle credentials for the kaggle command: set KAGGLE_API_TOKEN, or run `kaggle auth login`, "
            "or save kaggle.json in ~/.kaggle (tokens: kaggle.com > Settings > API)"
        )
    # After the credentials: kaggle 1.x authenticates as it starts, even for --version.
    check_kaggle_cli(executable)
    stale = write_generated(root, check=True)
    if stale:
        raise ReleaseError(f"{stale[0]} is not up to date; run `python -m hvq_utils.release notebooks` first")
    if wheel is not None and not (wheel.is_file() and wheel.match(f"hvq_utils-{VERSION}-*.whl")):
        raise ReleaseError(f"--wheel {wheel} is not an hvq_utils-{VERSION}-*.whl file")
    wheel = wheel or build_wheel(root, stage / "dist")
    kaggle = Kaggle(executable)
    push_wheel(kaggle, wheel, stage / "wheel", owner, public, wait_s)
    for nb in NOTEBOOKS:
        folder = stage_kernel(nb, root, stage / "kernels", owner, public)
        kaggle("kernels", "push", "-p", str(folder), *([] if nb.number in run else ["--no-run"]))
    for nb in NOTEBOOKS:
        print(f"{nb.number}: {kernel_url(nb, owner)}")


# ---- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvq_utils.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository (default: here)")
    sub = parser.add_subparsers(dest="command", required=True)
    nbs = sub.add_parser("notebooks", help="rewrite install cells, badges, metadata and kaggle/*/")
    nbs.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    push = sub.add_parser("kaggle-push", help="publish the wheel dataset and the kernels on Kaggle")
    push.add_argument("--owner", required=True, help="the Kaggle user that owns the kernels and the dataset")
    push.add_argument("--run", nargs="*", default=[], metavar="NN", help="run these notebooks (e.g. 01)")
    push.add_argument("--public", action="store_true", help="publish publicly (default: private)")
    push.add_argument("--wheel", type=Path, help="an hvq_utils wheel to publish instead of building one")
    push.add_argument("--stage", type=Path, default=Path("build/kaggle"), help="staging folder")
    push.add_argument("--wait", type=float, default=600, help="seconds to wait for the wheel dataset")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "notebooks":
            stale = write_generated(root, check=args.check)
            for path in stale:
                print(("not up to date: " if args.check else "wrote ") + str(path.relative_to(root)))
            return 1 if args.check and stale else 0
        kaggle_push(root, args.owner, (root / args.stage), args.wheel, args.run, args.public, args.wait)
    except ReleaseError as e:
        print(f"release: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
