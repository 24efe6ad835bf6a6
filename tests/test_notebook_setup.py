"""The notebooks, read statically: set-up before any stage, the DRIVE parameter, valid cell ids.

Also the Drive storage behind DRIVE (artifacts.storage), with google.colab faked.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import types
import warnings
from pathlib import Path

import pytest

from hvq_utils import artifacts, get_preset
from hvq_utils.manifest import ManifestError, write_manifest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NUMBERS = ["01", "02", "03", "04", "05", "06", "07"]

# The set-up call each notebook makes, and the batch setting it names (None: none). 01 prepares
# on the CPU with TensorFlow alone: it only needs the log lines, not Keras or a backend.
SETUP = {
    "01": ("configure_logging", None),
    "02": ("setup_runtime", "batch_size"),
    "03": ("setup_runtime", "encode_batch_size"),
    "04": ("setup_runtime", "prior_batch_size"),
    "05": ("setup_runtime", "prior_batch_size"),
    "06": ("setup_runtime", "prior_batch_size"),
    "07": ("setup_runtime", None),  # sample_batch_size is images at once, not per device
}
# Calls that log (or run a stage) and so must come after the set-up call.
STAGE_CALLS = {
    "storage", "locate", "output_dir", "resume_source", "find_source", "prepare_images", "train_vqvae",
    "encode_codes", "train_prior", "sample_images", "export_sources", "load_model", "publish",
}
HEAVY = {"keras", "tensorflow", "jax"}


def _notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _code_cells(nb: dict) -> list[tuple[int, ast.Module]]:
    """(index, parsed source) of every code cell but the install cell (the first, with %pip)."""
    code = [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    return [(i, ast.parse("".join(c["source"]))) for i, c in code[1:]]


def _events(nb: dict) -> list[tuple[tuple[int, int, int], str, ast.AST]]:
    """Every call and heavy import, in execution order: ((cell, line, column), name, node)."""
    found = []
    for i, tree in _code_cells(nb):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                found.append(((i, node.lineno, node.col_offset), name, node))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imported = isinstance(node, ast.Import)
                modules = [a.name for a in node.names] if imported else [node.module or ""]
                for m in modules:
                    if m.split(".")[0] in HEAVY:
                        found.append(((i, node.lineno, node.col_offset), "import " + m, node))
    return sorted(found, key=lambda e: e[0])


def test_the_seven_notebooks_are_there():
    assert [p.name[:2] for p in NOTEBOOKS] == NUMBERS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name[:2] for p in NOTEBOOKS])
def test_set_up_comes_before_the_first_stage_call(path):
    """Logging is configured by the set-up call: before it, the "using ... artifact" lines of
    `locate` and a stage's summary are dropped (Python's last-resort handler shows WARNING and
    above only)."""
    want, batch_key = SETUP[path.name[:2]]
    events = _events(_notebook(path))
    setups = [e for e in events if e[1] in ("setup_runtime", "configure_logging")]
    assert setups, f"{path.name} calls neither setup_runtime nor configure_logging"
    where, name, node = setups[0]
    assert name == want, f"{path.name} calls {name}, expected {want}"
    if want == "setup_runtime":
        given = list(node.args[1:2]) + [k.value for k in node.keywords if k.arg == "batch_key"]
        given = [ast.literal_eval(a) for a in given]
        assert given == ([batch_key] if batch_key else []), f"{path.name}: setup_runtime's batch_key"
    else:
        assert not [e for e in events if e[1] == "setup_runtime"], f"{path.name} needs no Keras backend"
    first_stage = next(e for e in events if e[1] in STAGE_CALLS or e[1].startswith("import "))
    assert where < first_stage[0], f"{path.name}: {first_stage[1]} runs before {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name[:2] for p in NOTEBOOKS])
def test_every_notebook_has_the_drive_parameter_and_uses_it(path):
    nb = _notebook(path)
    params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    assignments = {
        t.id: n.value for n in ast.parse("".join(params[0]["source"])).body if isinstance(n, ast.Assign)
        for t in n.targets if isinstance(t, ast.Name)
    }
    assert isinstance(assignments.get("DRIVE"), ast.Constant) and assignments["DRIVE"].value is False
    assert "DRIVE" in "".join(nb["cells"][0]["source"]), "the title cell says what DRIVE does"
    events = _events(nb)
    stores = [node for _, name, node in events if name == "storage"]
    assert len(stores) == 1 and [ast.unparse(a) for a in stores[0].args] == ["DRIVE"]
    # every "auto" path goes through the storage: no direct artifacts.locate / output_dir
    direct = [
        ast.unparse(node.func) for _, name, node in events
        if name in ("locate", "output_dir") and ast.unparse(node.func).startswith("artifacts.")
    ]
    assert not direct, f"{path.name} calls {direct} past DRIVE"
    assert any(name in ("locate", "output_dir") for _, name, _ in events)


ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name[:2] for p in NOTEBOOKS])
def test_every_cell_has_a_valid_unique_id_and_the_notebook_validates(path):
    nbformat = pytest.importorskip("nbformat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MissingIDFieldWarning, DuplicateCellId ... become errors
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    ids = [c.get("id") for c in nb.cells]
    assert all(isinstance(i, str) and ID.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids), ids


# --- DRIVE: artifacts.storage and runtime.drive_root, with google.colab faked -------------------


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A Colab process: google.colab imported, its drive.mount creating MyDrive under the mount
    point (tmp_path/drive here). Returns the list of mount calls."""
    calls = []

    def mount(mount_point, **kwargs):
        calls.append(mount_point)
        (Path(mount_point) / "MyDrive").mkdir(parents=True, exist_ok=True)

    drive = types.ModuleType("google.colab.drive")
    drive.mount = mount
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    monkeypatch.setattr("hvq_utils.runtime.DRIVE_MOUNT", str(tmp_path / "drive"))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    return calls


def test_drive_off_keeps_the_defaults(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    store = artifacts.storage(False)
    assert "google.colab" not in sys.modules  # nothing mounted, nothing imported
    assert store.root is None and store.roots == artifacts.SEARCH_ROOTS
    assert store.output_dir("vqvae") == artifacts.output_dir("vqvae")
    assert store.output_dir("vqvae", "/elsewhere/vq") == Path("/elsewhere/vq")


def test_drive_mounts_once_and_puts_every_auto_path_under_one_folder(fake_colab, tmp_path, caplog):
    caplog.set_level("INFO", logger="hvq_utils")
    store = artifacts.storage(True)
    again = artifacts.storage(True)  # a second notebook, or the same one run again
    assert fake_colab == [str(tmp_path / "drive")]
    root = tmp_path / "drive" / "MyDrive" / "hvq"
    assert store.root == again.root == root and root.is_dir()
    assert store.roots == (str(root),)
    assert f"'auto' inputs and outputs under {root}" in caplog.text
    # each stage's "auto" output folder, the names output_dir already uses
    names = ["data", "vqvae", "codes", "prior-top", "prior-middle", "prior-bottom", "samples"]
    assert [store.output_dir(n) for n in names] == [root / n for n in names]
    assert store.output_dir("vqvae", str(tmp_path / "mine")) == tmp_path / "mine"  # given: kept

    # 01 writes data under the root; 02's "auto" finds it there and nowhere else
    config = get_preset("smoke")
    write_manifest(store.output_dir("data"), "prepare", config, {}, image_size=32)
    assert store.locate("prepare") == root / "data"
    with pytest.raises(ManifestError, match=r"^no 'train-vqvae' artifact under .*hvq; run notebook 02 with"):
        store.locate("train-vqvae")
    with pytest.raises(ManifestError, match=r"'train-prior' \(middle\) .* run notebook 05 with DRIVE = True"):
        store.locate("train-prior", level="middle")


def test_drive_already_mounted_is_not_mounted_again(fake_colab, tmp_path):
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # mounted by hand, or by an earlier VM cell
    store = artifacts.storage("MyDrive/whales")
    assert fake_colab == [] and store.root == tmp_path / "drive" / "MyDrive" / "whales"


@pytest.mark.parametrize(
    "env,platform", [({}, "local"), ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, "kaggle")]
)
def test_drive_off_colab_is_a_one_line_error(monkeypatch, env, platform):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for var in ("KAGGLE_KERNEL_RUN_TYPE", "COLAB_RELEASE_TAG", "COLAB_JUPYTER_IP", "COLAB_BACKEND_VERSION"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeError) as e:
        artifacts.storage(True)
    message = str(e.value)
    assert "\n" not in message
    assert f"only Colab has (this runtime is {platform}); set DRIVE = False" in message
