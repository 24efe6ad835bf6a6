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
    assert FRAMEWORKS <= set(release.HELD)  # and the install cell holds each of them


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
        assert added["version"] == release.TENSORFLOW_CPU
        for name, spec in added["requires"].items():
            assert SpecifierSet(spec).contains(info["packages"][name]), f"{platform}'s {name} vs {spec}"
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
    """Runs the install cell in an IPython shell whose %pip only records its arguments, with
    `installed` {name: version} as what importlib.metadata finds and `wheels` attached under a
    stand-in for /kaggle/input. Returns the recorded pip command lines."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    inputs = tmp_path / "input"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real_glob = glob.glob
    monkeypatch.setattr(glob, "glob", lambda p, **k: real_glob(p.replace("/kaggle/input", str(inputs)), **k))

    def run(installed: dict[str, str], wheels: tuple[str, ...] = ()) -> list[str]:
        for wheel in wheels:
            (inputs / wheel).parent.mkdir(parents=True, exist_ok=True)
            (inputs / wheel).write_bytes(b"PK")

        def version(name):
            if name not in installed:
                raise importlib.metadata.PackageNotFoundError(name)
            return installed[name]

        monkeypatch.setattr(importlib.metadata, "version", version)
        modules = {"tensorflow"} if {"tensorflow", "tensorflow-cpu"} & set(installed) else set()
        monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: object() if m in modules else None)
        calls: list[str] = []
        shell.register_magic_function(calls.append, "line", "pip")
        result = shell.run_cell(release.INSTALL_CELL)
        assert result.success, result.error_in_exec or result.error_before_exec
        return calls

    return run


COLAB_TPU = {"jax": "0.7.2", "keras": "3.13.0", "numpy": "2.0.2", "ipywidgets": "7.7.1", "protobuf": "5.29.5"}


def test_the_install_cell_does_nothing_when_this_version_is_installed(install_cell):
    assert install_cell({"hvq_utils": __version__, "tensorflow": "2.20.0"}) == []


def test_the_install_cell_installs_the_tag_and_tensorflow_cpu_on_colab_tpu(install_cell, tmp_path):
    calls = install_cell(COLAB_TPU)
    held = tmp_path / "hvq-held.txt"
    tag = f"hvq_utils @ git+https://github.com/hvq-project/hvq@v{__version__}"
    assert calls == [
        f'install -q -c "{held}" "{tag}"',
        f'install -q -c "{held}" tensorflow-cpu=={release.TENSORFLOW_CPU}',
    ]
    assert sorted(held.read_text().splitlines()) == sorted(f"{k}=={v}" for k, v in COLAB_TPU.items())


def test_the_install_cell_prefers_the_attached_wheel_and_replaces_another_version(install_cell, tmp_path):
    wheel = f"datasets/someone/hvq-utils-wheel/hvq_utils-{__version__}-py3-none-any.whl"
    installed = {"hvq_utils": "0.0.9", "tensorflow-cpu": "2.20.0", "jax": "0.7.2"}
    calls = install_cell(installed, wheels=(wheel, "other/hvq_utils-0.0.1-py3-none-any.whl"))
    assert calls == [f'install -q -c "{tmp_path / "hvq-held.txt"}" "{tmp_path / "input" / wheel}"']
    assert "tensorflow-cpu==2.20.0" in (tmp_path / "hvq-held.txt").read_text()


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
    stages = set(re.findall(r"artifacts\.locate\(\s*\"([a-z-]+)\"", code))
    wanted = set().union(*(WRITTEN_BY[s] for s in stages))
    number = {_kernel(f)["id"]: f[:2] for f in FILES}
    assert {number[source] for source in _kernel(file)["kernel_sources"]} == wanted


# ---- kaggle-push --------------------------------------------------------------------------

SECRET = "s3cr3t-kaggle-key-0123456789"

FAKE_KAGGLE = """\
#!{python}
import json, os, pathlib, sys
args = sys.argv[1:]
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
