"""data/platforms.json and the stand-in builder (tools/platforms.py) that `make platforms` runs:
every version has a source, the floor is what pyproject.toml accepts, and the builder can attach
the wheel where the install cell looks."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from hvq_utils import release

ROOT = Path(__file__).resolve().parents[1]
DATA = json.loads((ROOT / "data" / "platforms.json").read_text())
PLATFORMS = DATA["platforms"]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("platforms_tool", ROOT / "tools" / "platforms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_four_platforms_are_there_with_their_backends():
    assert {name: info["backend"] for name, info in PLATFORMS.items()} == {
        "colab-gpu": "tensorflow", "kaggle-gpu": "tensorflow", "colab-tpu": "jax", "kaggle-tpu": "jax",
    }


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_version_is_exact_and_comes_from_a_dated_build_file(platform):
    info = PLATFORMS[platform]
    assert "assumed" not in json.dumps(info)
    assert re.fullmatch(r"3\.1[0-9]", info["python"])
    for name, version in info["packages"].items():
        assert name == name.lower() and "_" not in name, f"{name}: write pip's normalised name"
        assert version is None or str(Version(version)) == version, f"{platform}'s {name} {version}"
    assert info["sources"], f"{platform} names no source"
    for source in info["sources"]:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", source["repository"])
        assert re.fullmatch(r"[0-9a-f]{7,40}", source["commit"])
        assert re.fullmatch(r"20\d\d-\d\d-\d\d", source["date"])
        assert source["files"] and source["entries"]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_the_frameworks_are_stated_for_every_platform(platform):
    packages = PLATFORMS[platform]["packages"]
    for name in ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "numpy", "protobuf"):
        assert name in packages, f"data/platforms.json: does {platform} ship {name}? (null: it does not)"
    assert packages["keras"] and packages["jax"] == packages["jaxlib"]


def test_the_floor_pins_every_lower_bound_of_the_base_cpu_and_jax_requirements(tool):
    pins = dict(pin.split("==") for pin in tool.lower_bounds())
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for line in project["dependencies"] + extras["cpu"] + extras["jax"]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"python_version": tool.FLOOR_PYTHON}):
            continue
        lowest = [s.version for s in req.specifier if s.operator == ">="]
        assert pins.get(req.name) == lowest[0], f"{line}: the floor should pin {req.name}=={lowest[0]}"


def test_the_install_cell_names_the_kaggle_input_folder_once_so_the_wheel_can_be_attached(tool):
    assert tool.install_cell() == release.INSTALL_CELL
    assert release.INSTALL_CELL.count(tool.KAGGLE_INPUT) == 1


def test_a_missing_python_is_one_line_saying_how_to_get_it(tool, monkeypatch):
    monkeypatch.setattr(tool.shutil, "which", lambda name: None)
    with pytest.raises(tool.StandInError, match=r"^no Python 3\.9 here: install it \(pyenv install 3\.9\)"):
        tool.find_python("3.9")
