"""The release: requirements that fit every platform, the notebooks' generated parts, the Kaggle
kernel metadata, and `kaggle-push` against a fake `kaggle` command (no network)."""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from hvq_utils import __version__, release
from hvq_utils.prepare import COMPETITION

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = json.loads((ROOT / "data" / "platforms.json").read_text())["platforms"]
FILES = [nb.file for nb in release.NOTEBOOKS]
# What each notebook must run on, stated here independently of release.NOTEBOOKS.
KAGGLE_MACHINE = {"01": None, "02": "TpuV5E8", "03": "NvidiaTeslaT4", "04": "NvidiaTeslaT4",
                  "05": "NvidiaTeslaT4", "06": "NvidiaTeslaT4", "07": "NvidiaTeslaT4"}
COLAB = {"01": (None, None), "02": ("TPU", "V5E1"), **{f"0{n}": ("GPU", "T4") for n in range(3, 8)}}
# The stage whose output `artifacts.locate(stage)` finds -> the notebooks that write it.
WRITTEN_BY = {"prepare": {"01"}, "train-vqvae": {"02"}, "encode": {"03"}, "train-prior": {"04", "05", "06"}}
FRAMEWORKS = {"keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "protobuf", "ml-dtypes"}


@pytest.fixture(scope="module")
def pyproject():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _notebook(file: str) -> dict:
    return json.loads((ROOT / "notebooks" / file).read_text(encoding="utf-8"))


def _cells(file: str, kind: str) -> list[str]:
    return ["".join(c["source"]) for c in _notebook(file)["cells"] if c["cell_type"] == kind]


def _kernel(file: str) -> dict:
    return json.loads((ROOT / "kaggle" / file.removesuffix(".ipynb") / "kernel-metadata.json").read_text())


# ---- versions and platforms ---------------------------------------------------------------


def test_the_release_tag_is_pyprojects_version(pyproject):
    assert pyproject["version"] == __version__ == release.VERSION
    assert release.TAG == f"v{pyproject['version']}"


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_base_requirement_accepts_what_the_platform_ships(pyproject, platform):
    shipped = PLATFORMS[platform]["packages"]
    for line in pyproject["dependencies"]:
        req = Requirement(line)
        assert req.name in shipped, f"data/platforms.json: does {platform} ship {req.name}?"
        version = shipped[req.name]
        if version is not None:
            assert req.specifier.contains(version, prereleases=True), (
                f"{line!r} would change {platform}'s {req.name} {version}"
            )


def test_the_base_requirements_never_name_a_framework(pyproject):
    names = {Requirement(line).name for line in pyproject["dependencies"]}
    assert not names & FRAMEWORKS


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_platform_python_satisfies_requires_python(pyproject, platform):
    assert SpecifierSet(pyproject["requires-python"]).contains(PLATFORMS[platform]["python"])


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_tensorflow_cpu_is_added_exactly_where_tensorflow_is_missing(pyproject, platform):
    info = PLATFORMS[platform]
    has_tf = info["packages"]["tensorflow"] or info["packages"]["tensorflow-cpu"]
    added = info["setup_installs"].get("tensorflow-cpu")
    assert bool(has_tf) != bool(added)
    if added:
        # That it installs beside the platform's packages is what tools/platforms.py checks.
        assert added["version"] == release.TENSORFLOW_CPU
        cpu = [Requirement(r) for r in pyproject["optional-dependencies"]["cpu"]]
        assert all(r.specifier.contains(release.TENSORFLOW_CPU) for r in cpu if r.name == "tensorflow-cpu")


def test_the_competition_is_the_one_prepare_and_notebook_01_use():
    competition = json.loads((ROOT / "data" / "competition.json").read_text())
    assert competition["slug"] == COMPETITION == release.COMPETITION
    assert _kernel("01_prepare_data.ipynb")["competition_sources"] == [COMPETITION]
    assert competition["columns"]["train.csv"] == ["Image", "Id"]


# ---- the notebooks' generated parts -------------------------------------------------------


@pytest.mark.parametrize("file", FILES)
def test_the_install_cell_is_the_generated_one(file):
    first_code = _cells(file, "code")[0]
    assert first_code == release.INSTALL_CELL
    assert f"@v{__version__}" in first_code and f"tensorflow-cpu=={release.TENSORFLOW_CPU}" in first_code


@pytest.mark.parametrize("file", FILES)
def test_the_colab_badge_opens_this_notebook_at_the_tag(file):
    title = _cells(file, "markdown")[0]
    url = f"https://colab.research.google.com/github/hvq-project/hvq/blob/v{__version__}/notebooks/{file}"
    assert title.count("colab-badge.svg") == 1
    assert f"]({url})" in title
    github = f"https://github.com/hvq-project/hvq/blob/v{__version__}/notebooks/{file}"
    assert f"(https://kaggle.com/kernels/welcome?src={github})" in title


@pytest.mark.parametrize("file", FILES)
def test_the_notebook_asks_for_its_accelerator(file):
    meta = _notebook(file)["metadata"]
    accelerator, gpu_type = COLAB[file[:2]]
    assert meta.get("accelerator") == accelerator
    assert meta["colab"].get("gpuType") == gpu_type
    machine = KAGGLE_MACHINE[file[:2]]
    kaggle_names = {None: "none", "TpuV5E8": "tpuV5e8", "NvidiaTeslaT4": "nvidiaTeslaT4"}
    assert meta["kaggle"]["accelerator"] == kaggle_names[machine]
    assert meta["kaggle"]["isInternetEnabled"] is True
    assert "dockerImageVersionId" not in meta["kaggle"]


def test_the_generated_files_are_up_to_date():
    assert release.write_generated(ROOT, check=True) == []


def test_the_generator_rewrites_only_its_parts(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for file in FILES:
        shutil.copy(ROOT / "notebooks" / file, tmp_path / "notebooks" / file)
    path = tmp_path / "notebooks" / "02_train_vqvae.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][1]["source"] = ['%pip install "hvq_utils @ git+https://example.org/old"']
    title = nb["cells"][0]["source"]
    title.insert(1, "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](old)\n")
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = ["DATA = '/my/data'  # the lead's edit\n"]
    nb["metadata"]["accelerator"] = "GPU"
    path.write_text(json.dumps(nb))

    assert path in release.write_generated(tmp_path, check=True)
    assert release.write_generated(tmp_path) != []
    assert release.write_generated(tmp_path, check=True) == []  # a second run changes nothing
    out = json.loads(path.read_text())
    assert "".join(out["cells"][1]["source"]) == release.INSTALL_CELL
    assert "".join(out["cells"][0]["source"]).count("colab-badge.svg") == 1
    assert "(old)" not in "".join(out["cells"][0]["source"])
    assert next(c for c in out["cells"] if "parameters" in c["metadata"].get("tags", []))["source"] == [
        "DATA = '/my/data'  # the lead's edit\n"
    ]
    assert out["metadata"]["accelerator"] == "TPU"
    assert [c["source"] for c in out["cells"][2:]] == [c["source"] for c in nb["cells"][2:]]
    assert (tmp_path / "kaggle" / "02_train_vqvae" / "kernel-metadata.json").is_file()


def test_the_generator_command_checks_and_writes(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for file in FILES:
        shutil.copy(ROOT / "notebooks" / file, tmp_path / "notebooks" / file)
    assert release.main(["--root", str(tmp_path), "notebooks", "--check"]) == 1  # kaggle/ is missing
    assert release.main(["--root", str(tmp_path), "notebooks"]) == 0
    assert release.main(["--root", str(tmp_path), "notebooks", "--check"]) == 0


# ---- the install cell, run by IPython -----------------------------------------------------


@pytest.fixture
def install_cell(tmp_path, monkeypatch):
    """Runs the install cell in an IPython shell whose pip calls are recorded, not run. `installed`
    {name: version} is what importlib.metadata finds; `wheels` are attached under a stand-in for
    /kaggle/input; `failing` are the requirements pip fails to install. Returns the requirements
    pip was asked for, in order, and the shell's result."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    inputs = tmp_path / "input"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real_glob = glob.glob
    monkeypatch.setattr(glob, "glob", lambda p, **k: real_glob(p.replace("/kaggle/input", str(inputs)), **k))

    def run(installed: dict[str, str], wheels: tuple[str, ...] = (), failing: tuple[str, ...] = ()):
        for wheel in wheels:
            (inputs / wheel).parent.mkdir(parents=True, exist_ok=True)
            (inputs / wheel).write_bytes(b"PK")

        def version(name):
            if name not in installed:
                raise importlib.metadata.PackageNotFoundError(name)
            return installed[name]

        monkeypatch.setattr(importlib.metadata, "version", version)
        dists = [SimpleNamespace(metadata={"Name": n}, version=v) for n, v in installed.items()]
        monkeypatch.setattr(importlib.metadata, "distributions", lambda: iter(dists))
        modules = {"tensorflow"} if {"tensorflow", "tensorflow-cpu"} & set(installed) else set()
        monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: object() if m in modules else None)
        asked: list[str] = []

        def pip(cmd, **kwargs):
            assert cmd[:5] == [sys.executable, "-m", "pip", "install", "-q"]
            assert cmd[5:7] == ["-c", str(tmp_path / "hvq-held.txt")]
            asked.append(cmd[-1])
            ok = cmd[-1] not in failing
            if ok and cmd[-1].startswith("tensorflow-cpu"):
                modules.add("tensorflow")
            return subprocess.CompletedProcess(cmd, 0 if ok else 1, "", "" if ok else "ERROR: no route\n")

        monkeypatch.setattr(subprocess, "run", pip)
        return asked, shell.run_cell(release.INSTALL_CELL)

    return run


COLAB_TPU = {"jax": "0.7.2", "keras": "3.13.2", "numpy": "2.1.3", "ipywidgets": "7.7.1", "protobuf": "7.35.1",
             "h5py": "3.16.0"}
WHEEL = f"datasets/someone/hvq-utils-wheel/hvq_utils-{__version__}-py3-none-any.whl"
TF_CPU = f"tensorflow-cpu=={release.TENSORFLOW_CPU}"


def _one_line_exit(result) -> str:
    """The message of the SystemExit the cell raised: one line, starting 'hvq set-up:'."""
    assert not result.success and isinstance(result.error_in_exec, SystemExit)
    message = str(result.error_in_exec)
    assert message.startswith("hvq set-up: ") and "\n" not in message
    return message


def test_the_install_cell_does_nothing_when_this_version_is_installed(install_cell):
    asked, result = install_cell({"hvq_utils": __version__, "tensorflow": "2.20.0"})
    assert result.success and asked == []


def test_the_install_cell_installs_the_tag_and_tensorflow_cpu_on_colab_tpu(install_cell, tmp_path):
    asked, result = install_cell(COLAB_TPU)
    assert result.success and asked == [release.GIT_SOURCE, TF_CPU]
    held = (tmp_path / "hvq-held.txt").read_text().splitlines()
    assert sorted(held) == sorted(f"{k}=={v}" for k, v in COLAB_TPU.items())


def test_the_install_cell_holds_everything_installed_but_hvq_utils(install_cell, tmp_path):
    installed = {"Pillow": "11.3.0", "ml_dtypes": "0.6.0", "hvq_utils": "0.0.9", "tensorflow": "2.20.0",
                 "odd-build": "1.0-custom-build"}  # a version pip could not parse is left out
    asked, result = install_cell(installed)
    assert result.success and asked == [release.GIT_SOURCE]
    held = (tmp_path / "hvq-held.txt").read_text().splitlines()
    assert held == ["ml-dtypes==0.6.0", "pillow==11.3.0", "tensorflow==2.20.0"]


def test_the_install_cell_prefers_the_attached_wheel_and_replaces_another_version(install_cell, tmp_path):
    installed = {"hvq_utils": "0.0.9", "tensorflow-cpu": "2.20.0", "jax": "0.7.2"}
    asked, result = install_cell(installed, wheels=(WHEEL, "other/hvq_utils-0.0.1-py3-none-any.whl"))
    assert result.success and asked == [str(tmp_path / "input" / WHEEL)]
    assert "tensorflow-cpu==2.20.0" in (tmp_path / "hvq-held.txt").read_text()


def test_the_install_cell_falls_back_to_the_repository_when_the_wheel_fails(install_cell, tmp_path):
    wheel = str(tmp_path / "input" / WHEEL)
    asked, result = install_cell({"tensorflow": "2.20.0"}, wheels=(WHEEL,), failing=(wheel,))
    assert result.success and asked == [wheel, release.GIT_SOURCE]


@pytest.mark.parametrize("attached", [False, True])
def test_the_install_cell_stops_with_one_line_saying_what_to_attach_or_enable(
    install_cell, tmp_path, attached
):
    wheel = str(tmp_path / "input" / WHEEL)
    asked, result = install_cell(
        {"tensorflow": "2.20.0"}, wheels=(WHEEL,) if attached else (), failing=(wheel, release.GIT_SOURCE)
    )
    assert asked == ([wheel] if attached else []) + [release.GIT_SOURCE]  # and no tensorflow-cpu after
    message = _one_line_exit(result)
    assert f"{release.KAGGLE_OWNER}/{release.WHEEL_DATASET}" in message  # what to attach
    assert "Internet on" in message and "HVQ_SOURCE" in message  # what to enable, what to set
    assert ("the attached wheel failed" if attached else "no wheel attached") in message


def test_the_install_cell_stops_with_one_line_when_tensorflow_cpu_cannot_be_added(install_cell):
    asked, result = install_cell(COLAB_TPU, failing=(TF_CPU,))
    assert asked == [release.GIT_SOURCE, TF_CPU]
    message = _one_line_exit(result)
    assert TF_CPU in message and "Internet on" in message


# ---- kernel metadata ----------------------------------------------------------------------

REQUIRED = {"id", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu", "enable_tpu",
            "enable_internet", "dataset_sources", "competition_sources", "kernel_sources", "model_sources"}


@pytest.mark.parametrize("file", FILES)
def test_the_kernel_metadata_is_valid_for_kaggle(file):
    meta = _kernel(file)
    folder = ROOT / "kaggle" / file.removesuffix(".ipynb")
    assert REQUIRED <= set(meta) and "docker_image" not in meta and "docker_image_pinning_type" not in meta
    owner, slug = meta["id"].split("/")
    assert owner == "hvq-project" and len(meta["title"]) >= 5
    assert slug == re.sub(r"[^a-z0-9]+", "-", meta["title"].lower()).strip("-")  # as Kaggle slugifies
    assert (folder / meta["code_file"]).resolve() == ROOT / "notebooks" / file
    assert (meta["language"], meta["kernel_type"], meta["enable_internet"]) == ("python", "notebook", True)
    machine = KAGGLE_MACHINE[file[:2]]
    assert meta.get("machine_shape") == machine
    assert (meta["enable_gpu"], meta["enable_tpu"]) == (machine == "NvidiaTeslaT4", machine == "TpuV5E8")
    assert meta["competition_sources"] == (["humpback-whale-identification"] if file.startswith("01") else [])
    assert meta["dataset_sources"] == ["hvq-project/hvq-utils-wheel"]
    assert (folder / "kernel-metadata.json").read_text() == release.metadata_text(
        release.kernel_metadata(release.BY_NUMBER[file[:2]])
    )


def test_the_kernels_form_a_chain_in_notebook_order():
    ids = {_kernel(f)["id"]: f[:2] for f in FILES}
    assert len(ids) == len(FILES)
    for file in FILES:
        for source in _kernel(file)["kernel_sources"]:
            assert source in ids, f"{file}: {source} is not one of the kernels"
            assert ids[source] < file[:2], f"{file} reads {source}, which is not earlier: a cycle is possible"


@pytest.mark.parametrize("file", FILES)
def test_the_kernel_sources_are_what_the_notebook_locates(file):
    code = "\n".join(_cells(file, "code"))
    # store.locate: the DRIVE-aware lookup the notebooks call
    stages = set(re.findall(r"(?:artifacts|store)\.locate\(\s*\"([a-z-]+)\"", code))
    wanted = set().union(*(WRITTEN_BY[s] for s in stages))
    number = {_kernel(f)["id"]: f[:2] for f in FILES}
    assert {number[source] for source in _kernel(file)["kernel_sources"]} == wanted


# The stage function a notebook runs -> the stage whose settings its OVERRIDES may hold.
RUNS = {"prepare_images(": "prepare", "train_vqvae(": "train-vqvae", "encode_codes(": "encode",
        "train_prior(": "train-prior", "sample_images(": "sample"}


@pytest.mark.parametrize("file", FILES)
def test_the_notebooks_overrides_are_checked_against_the_stage_it_runs(file):
    code = "\n".join(_cells(file, "code"))
    stages = {stage for call, stage in RUNS.items() if call in code}
    assert len(stages) == 1, stages
    calls = re.findall(r"get_preset\(([^)]*)\)", code)
    assert calls
    for args in calls:
        if "OVERRIDES" in args:  # a stage refuses another stage's setting instead of ignoring it
            assert f'stage="{stages.pop()}"' in args, args


# A notebook output's Kaggle handle as the README, the notebooks and hvq_utils write it; the
# module docstring of hvq_utils.artifacts shows the form with the placeholder owner/notebook-slug.
HANDLE = re.compile(r"notebook:([A-Za-z0-9][A-Za-z0-9_-]*)/([A-Za-z0-9][A-Za-z0-9_-]*)")
PLACEHOLDER = ("owner", "notebook-slug")


def test_every_notebook_handle_shown_names_a_real_kernel():
    slugs = {_kernel(f)["id"].split("/")[1] for f in FILES}
    paths = [ROOT / "README.md", *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "hvq_utils").rglob("*.py")]
    texts = {p: p.read_text(encoding="utf-8") for p in paths}
    shown = [(p.relative_to(ROOT), m.groups()) for p, text in texts.items() for m in HANDLE.finditer(text)]
    assert len(shown) >= 3  # the README's two and notebook 02's at least
    wrong = [(str(p), f"{owner}/{slug}") for p, (owner, slug) in shown if (owner, slug) != PLACEHOLDER
             and slug not in slugs]
    assert not wrong, f"not the slug of any kaggle/*/kernel-metadata.json id: {wrong}"


def test_the_handles_in_messages_are_the_kernels_own(tmp_path):
    from hvq_utils import artifacts

    ids = {f[:2]: _kernel(f)["id"].split("/")[1] for f in FILES}
    assert {n: release.notebook_handle(n) for n in ids} == {n: f"notebook:you/{s}" for n, s in ids.items()}
    assert release.notebook_handle("02", "me") == "notebook:me/hvq-02-train-vq-vae"
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.resume_source("train-vqvae", str(tmp_path / "gone"))
    assert str(e.value).endswith(f"a Kaggle handle such as 'notebook:you/{ids['02']}'")
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.resume_source("train-prior", str(tmp_path / "gone"), level="middle")
    assert str(e.value).endswith(f"'notebook:you/{ids['05']}'")
    with pytest.raises(artifacts.ManifestError) as e:
        artifacts.locate("encode", roots=(str(tmp_path),))
    assert str(e.value).endswith(f"'notebook:you/{ids['03']}'")


# ---- kaggle-push --------------------------------------------------------------------------

SECRET = "s3cr3t-kaggle-key-0123456789"

FAKE_KAGGLE = """\
#!{python}
import json, os, pathlib, sys
args = sys.argv[1:]
if args == ["--version"]:  # as kaggle 2.x says it (1.x: "Kaggle API 1.7.4.5"); not logged
    print(os.environ.get("FAKE_KAGGLE_VERSION", "Kaggle CLI 2.2.5"))
    sys.exit()
state = pathlib.Path(os.environ["FAKE_KAGGLE_STATE"])
record = {{"argv": args}}
if "-p" in args:
    folder = pathlib.Path(args[args.index("-p") + 1])
    record["files"] = {{p.name: p.read_bytes().decode("utf-8", "replace") for p in folder.iterdir()}}
with open(state / "log.jsonl", "a") as f:
    f.write(json.dumps(record) + "\\n")
if args[:2] == ["datasets", "status"]:
    if (state / "dataset").exists():
        print("ready")
    else:
        sys.exit("404 Client Error: Not Found for url")
elif args[:2] == ["datasets", "create"]:
    (state / "dataset").touch()
    print("Your private Dataset is being created. Please check progress at https://www.kaggle.com/x")
elif args[:2] == ["datasets", "version"]:
    print("Dataset version is being created. Please check progress at https://www.kaggle.com/x")
elif args[:2] == ["kernels", "push"]:
    failed = (state / "fail").exists()
    print("Kernel push error: Notebook not found" if failed else "Kernel version 1 successfully pushed.")
"""


@pytest.fixture
def fake_kaggle(tmp_path):
    """A `kaggle` on PATH that logs its arguments and the files of the folder it is given; a
    home with credentials in $KAGGLE_CONFIG_DIR/kaggle.json. Returns (env, state folder)."""
    bin_dir, state, home, config = (tmp_path / d for d in ("bin", "state", "home", "config"))
    for d in (bin_dir, state, home, config):
        d.mkdir()
    exe = bin_dir / "kaggle"
    exe.write_text(FAKE_KAGGLE.format(python=sys.executable))
    exe.chmod(0o755)
    (config / "kaggle.json").write_text(json.dumps({"username": "some-one", "key": SECRET}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), KAGGLE_CONFIG_DIR=str(config))
    env["FAKE_KAGGLE_STATE"] = str(state)
    return env, state


def _push(tmp_path, env, *extra: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m hvq_utils.release kaggle-push` for owner some-one with a stand-in wheel; `extra`
    arguments come last (argparse keeps the last of a repeated option)."""
    wheel = tmp_path / f"hvq_utils-{__version__}-py3-none-any.whl"
    wheel.write_bytes(b"PK wheel bytes")
    cmd = [sys.executable, "-m", "hvq_utils.release", "--root", str(root), "kaggle-push"]
    cmd += ["--owner", "some-one", "--wheel", str(wheel), "--stage", str(tmp_path / "stage"), "--wait", "5"]
    cmd += extra
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)


def _log(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "log.jsonl").read_text().splitlines()]


def test_kaggle_push_publishes_the_wheel_and_seven_kernels_for_the_owner(tmp_path, fake_kaggle):
    env, state = fake_kaggle
    done = _push(tmp_path, env, "--run", "01")
    assert done.returncode == 0, done.stderr
    log = _log(state)
    argv = [r["argv"][:2] for r in log]
    assert argv[:2] == [["datasets", "status"], ["datasets", "create"]]
    assert log[0]["argv"][2] == "some-one/hvq-utils-wheel"
    wheel_files = log[1]["files"]
    assert json.loads(wheel_files["dataset-metadata.json"]) == {
        "title": "hvq-utils wheel", "id": "some-one/hvq-utils-wheel", "licenses": [{"name": "MIT"}]}
    assert wheel_files[f"hvq_utils-{__version__}-py3-none-any.whl"] == "PK wheel bytes"

    pushes = [r for r in log if r["argv"][:2] == ["kernels", "push"]]
    assert len(pushes) == 7
    assert argv.index(["kernels", "push"]) > max(i for i, a in enumerate(argv) if a[0] == "datasets")
    for nb, push in zip(release.NOTEBOOKS, pushes, strict=True):
        meta = json.loads(push["files"]["kernel-metadata.json"])
        assert meta["id"] == f"some-one/{nb.slug}"
        assert meta["code_file"] == nb.file and nb.file in push["files"]
        assert json.loads(push["files"][nb.file]) == _notebook(nb.file)
        assert meta["dataset_sources"] == ["some-one/hvq-utils-wheel"]
        assert all(s.startswith("some-one/hvq-") for s in meta["kernel_sources"])
        assert "hvq-project" not in push["files"]["kernel-metadata.json"]
        assert ("--no-run" in push["argv"]) == (nb.number != "01")
    assert "https://www.kaggle.com/code/some-one/hvq-07-sample" in done.stdout
    everything = json.dumps(log) + done.stdout + done.stderr
    staged = [p for p in (tmp_path / "stage").rglob("*") if p.is_file()]
    everything += "".join(p.read_text(errors="replace") for p in staged)
    assert SECRET not in everything


def test_kaggle_push_versions_an_existing_wheel_dataset(tmp_path, fake_kaggle):
    env, state = fake_kaggle
    (state / "dataset").touch()
    done = _push(tmp_path, env)
    assert done.returncode == 0, done.stderr
    argv = [r["argv"] for r in _log(state)]
    assert argv[1][:2] == ["datasets", "version"] and ["datasets", "create"] not in [a[:2] for a in argv]
    assert all("--no-run" in a for a in argv if a[:2] == ["kernels", "push"])


def test_kaggle_push_stops_at_a_failed_push(tmp_path, fake_kaggle):
    env, state = fake_kaggle
    (state / "fail").touch()
    done = _push(tmp_path, env)
    assert done.returncode == 2
    assert done.stderr.strip() == "release: `kaggle kernels push` failed (its output is above)"
    assert sum(r["argv"][:2] == ["kernels", "push"] for r in _log(state)) == 1


def test_kaggle_push_refuses_without_the_kaggle_command(tmp_path, fake_kaggle):
    env, state = fake_kaggle
    env["PATH"] = str(tmp_path / "nothing")
    done = _push(tmp_path, env)
    assert done.returncode == 2 and "needs the `kaggle` command" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (state / "log.jsonl").exists()


def test_kaggle_push_refuses_without_credentials(tmp_path, fake_kaggle):
    env, state = fake_kaggle
    del env["KAGGLE_CONFIG_DIR"]
    done = _push(tmp_path, env)
    assert done.returncode == 2 and "no Kaggle credentials" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (state / "log.jsonl").exists()


def test_kaggle_push_refuses_notebooks_the_generator_has_not_written(tmp_path, fake_kaggle):
    env, state = fake_kaggle
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "kaggle", root / "kaggle")
    path = root / "notebooks" / "04_train_top_prior.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][1]["source"] = ["%pip install hvq_utils"]
    path.write_text(json.dumps(nb))
    done = _push(tmp_path, env, root=root)
    assert done.returncode == 2 and "04_train_top_prior.ipynb is not up to date" in done.stderr
    assert not (state / "log.jsonl").exists()


def test_kaggle_push_refuses_a_bad_owner_or_notebook_number(tmp_path, fake_kaggle):
    env, state = fake_kaggle
    assert "is not a Kaggle user name" in _push(tmp_path, env, "--owner", "a/b").stderr
    assert "--run 08: no such notebook" in _push(tmp_path, env, "--run", "08").stderr
    assert not (state / "log.jsonl").exists()


@pytest.mark.parametrize(
    "said, named",
    [
        ("Kaggle CLI 2.2.4", "is kaggle 2.2.4, which lacks `kernels push --no-run`"),
        ("Kaggle API 1.7.4.5", "is kaggle 1.7.4.5, which lacks `kernels push --no-run`"),
        ("usage: kaggle [-h]", "cannot tell the version of the `kaggle` command"),
    ],
)
def test_kaggle_push_refuses_a_kaggle_cli_without_no_run_before_uploading(tmp_path, fake_kaggle, said, named):
    env, state = fake_kaggle
    env["FAKE_KAGGLE_VERSION"] = said
    done = _push(tmp_path, env)
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert 'pip install -U "kaggle>=2.2.5"' in done.stderr
    assert not (state / "log.jsonl").exists()


@pytest.mark.parametrize("said", ["Kaggle CLI 2.2.5", "Kaggle CLI 2.10.0", "Kaggle CLI 3.0"])
def test_a_kaggle_cli_from_2_2_5_on_is_accepted(fake_kaggle, monkeypatch, said):
    env, _ = fake_kaggle
    monkeypatch.setenv("FAKE_KAGGLE_VERSION", said)
    exe = shutil.which("kaggle", path=env["PATH"])
    assert release.check_kaggle_cli(exe) == said.split()[-1]


@pytest.mark.parametrize(
    "env, file",
    [
        ({"KAGGLE_API_TOKEN": "t"}, None),
        ({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, None),
        ({}, ".kaggle/kaggle.json"),
        ({}, ".config/kaggle/kaggle.json"),
        ({}, ".kaggle/access_token"),
        ({}, ".kaggle/credentials.json"),
        ({"KAGGLE_CONFIG_DIR": "cfg"}, "cfg/kaggle.json"),
    ],
)
def test_credentials_are_found_where_the_kaggle_command_looks(tmp_path, env, file):
    env = {k: str(tmp_path / v) if k == "KAGGLE_CONFIG_DIR" else v for k, v in env.items()}
    if file:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text("{}")
    assert release.kaggle_credentials_present(env, tmp_path)
    assert not release.kaggle_credentials_present({"KAGGLE_USERNAME": "u"}, tmp_path / "empty")


@pytest.mark.parametrize("file", FILES)
def test_the_notebook_is_stored_without_outputs(file):
    nb = json.loads((ROOT / "notebooks" / file).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{file}: clear its outputs"
    assert "widgets" not in nb["metadata"], f"{file}: saved widget state; clear its outputs"
