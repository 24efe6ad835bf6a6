"""`hvq_utils[cpu,jax,dev]` resolves to binary wheels from PyPI on every supported machine and Python.

Each case runs pip's own resolver (`pip install --dry-run --report`) for one (machine, Python) pair
other than this one, with wheels only: once as a user gets it (the newest versions the bounds allow)
and once with every requirement of the extras held at its lower bound, so that a lower or an upper
bound that leaves some pair without a wheel fails here.
"""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

# Twenty-four resolutions against PyPI: minutes.
pytestmark = pytest.mark.slow

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
EXTRAS = ("cpu", "jax", "dev")
TENSORFLOWS = {"tensorflow", "tensorflow-cpu"}


def _manylinux(arch: str, glibc_minor: int = 28) -> tuple[str, ...]:
    """Wheel platform tags a glibc 2.<glibc_minor> Linux machine accepts.

    pip matches tags literally and widens neither `manylinux_2_Y` to older glibc nor the legacy
    names, so both are listed (manylinux2014 is 2_17, manylinux2010 2_12, manylinux1 2_5). glibc
    2.28 (RHEL 8, Debian 10) is older than most machines in use, and TensorFlow 2.21's
    manylinux_2_27 wheels run on it.
    """
    tags = tuple(f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor, 4, -1))
    return tags + (f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}")


@dataclass(frozen=True)
class Machine:
    platforms: tuple[str, ...]  # --platform tags
    markers: dict[str, str]  # PEP 508 marker values of that machine
    tensorflow: str  # the TensorFlow distribution the [cpu] extra must pick there


_LINUX = {"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux"}
MACHINES = {
    # pip widens macosx_14_0 to every older macOS version and to universal2.
    "macos-arm64": Machine(
        ("macosx_14_0_arm64",),
        {
            "os_name": "posix",
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "platform_machine": "arm64",
            "platform_release": "23.0.0",
            "platform_version": "Darwin Kernel Version 23.0.0",
        },
        "tensorflow",
    ),
    "linux-x86_64": Machine(
        _manylinux("x86_64"),
        {**_LINUX, "platform_machine": "x86_64", "platform_release": "5.15.0", "platform_version": "#1 SMP"},
        "tensorflow-cpu",
    ),
    "linux-aarch64": Machine(
        _manylinux("aarch64"),
        {**_LINUX, "platform_machine": "aarch64", "platform_release": "5.15.0", "platform_version": "#1 SMP"},
        "tensorflow",
    ),
}

# pip evaluates environment markers against the interpreter it runs in, whatever --platform and
# --python-version say (pypa/pip#11664), so a plain `pip install --platform` here would follow this
# machine's branch of every marker. The runner puts the target's values into the marker environment
# of pip's vendored `packaging` before pip loads, then runs pip's CLI and resolver unchanged.
_RUNNER = """
import json, sys
from pip._vendor.packaging import markers
target, host = json.loads(sys.argv[1]), markers.default_environment
markers.default_environment = lambda: {**host(), **target}
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""

# Sources and constraints come from PyPI alone, as on a clean CI machine: PIP_CONFIG_FILE=os.devnull
# skips every pip config file (this machine's adds local find-links, file:// indexes and a
# constraints file) and PIP_* variables other than these (e.g. PIP_FIND_LINKS) are dropped.
_PIP_KEEP = {
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_INDEX_URL",
    "PIP_PROXY",
    "PIP_RETRIES",
    "PIP_TRUSTED_HOST",
}


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in _PIP_KEEP}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _tail(result: subprocess.CompletedProcess, lines: int = 40) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


@pytest.fixture(scope="module")
def project_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(out)]
    result = subprocess.run(cmd, env=_pip_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, _tail(result)
    (wheel,) = out.glob("hvq_utils-*.whl")
    return wheel


def _marker_environment(machine: Machine, python: str) -> dict[str, str]:
    return {
        **machine.markers,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "implementation_version": f"{python}.0",
        "python_version": python,
        "python_full_version": f"{python}.0",
    }


def _resolve(wheel: Path, machine: Machine, python: str, tmp_path: Path, constraints=()) -> dict:
    """pip's installation report for `<wheel>[cpu,jax,dev]` on `machine` under CPython `python`."""
    report = tmp_path / "report.json"
    markers = json.dumps(_marker_environment(machine, python))
    cmd = [sys.executable, "-c", _RUNNER, markers, "install", "--dry-run", "--ignore-installed"]
    cmd += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for tag in machine.platforms:
        cmd += ["--platform", tag]
    if constraints:
        (tmp_path / "constraints.txt").write_text("\n".join(constraints) + "\n")
        cmd += ["--constraint", str(tmp_path / "constraints.txt")]
    # Not --quiet: pip explains a conflict ("The conflict is caused by: ...") at the info level.
    cmd += ["--report", str(report), f"{wheel}[{','.join(EXTRAS)}]"]
    result = subprocess.run(cmd, env=_pip_env(), capture_output=True, text=True, timeout=600)
    where = ", ".join([machine.platforms[0], f"Python {python}", *constraints])
    assert result.returncode == 0, f"pip found no set of wheels for {where}:\n{_tail(result)}"
    return json.loads(report.read_text())


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _picked(report: dict) -> dict[str, dict]:
    """{normalised name: the report's entry} of each distribution pip would install."""
    return {_norm(item["metadata"]["name"]): item for item in report["install"]}


def _lower_bounds_of_the_extras(wheel: Path, machine: Machine, python: str) -> dict[str, Version]:
    """{name: lower bound} of each requirement the extras make on that machine and Python, read from
    the wheel's metadata, so that a marker choosing between two bounds is followed as pip follows it."""
    with zipfile.ZipFile(wheel) as zf:
        (metadata,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        requires = email.parser.Parser().parsestr(zf.read(metadata).decode()).get_all("Requires-Dist", [])
    env = _marker_environment(machine, python)
    bounds: dict[str, Version] = {}
    for line in requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            continue  # a base dependency
        if any(req.marker.evaluate({**env, "extra": extra}) for extra in EXTRAS):
            for spec in req.specifier:
                if spec.operator in (">=", "==", "~="):
                    name = _norm(req.name)
                    bounds[name] = max(bounds.get(name, Version(spec.version)), Version(spec.version))
    return bounds


CASES = [pytest.param(name, python, id=f"{name}-py{python}") for name in MACHINES for python in PYTHONS]


@pytest.mark.parametrize(("machine_name", "python"), CASES)
def test_cpu_jax_dev_extras_resolve_to_wheels_with_the_machines_tensorflow(
    project_wheel, machine_name, python, tmp_path
):
    machine = MACHINES[machine_name]
    report = _resolve(project_wheel, machine, python, tmp_path)

    # The report records the marker environment pip resolved under: the target's, not this machine's.
    env = report["environment"]
    assert (env["sys_platform"], env["platform_machine"], env["python_version"]) == (
        machine.markers["sys_platform"],
        machine.markers["platform_machine"],
        python,
    )

    picked = _picked(report)
    assert TENSORFLOWS & picked.keys() == {machine.tensorflow}
    for name in ("keras", "jax", "jaxlib", "tensorboard", "pytest", "ipykernel", "numpy"):
        assert name in picked, f"{name} missing from the resolution"
    sdists = [name for name, item in picked.items() if not item["download_info"]["url"].endswith(".whl")]
    assert sdists == []


@pytest.mark.parametrize(("machine_name", "python"), CASES)
def test_the_lowest_versions_the_extras_allow_have_wheels(project_wheel, machine_name, python, tmp_path):
    machine = MACHINES[machine_name]
    bounds = _lower_bounds_of_the_extras(project_wheel, machine, python)
    assert TENSORFLOWS & bounds.keys() == {machine.tensorflow}
    assert {"jax", "keras"} <= bounds.keys()
    pins = [f"{name}=={version}" for name, version in sorted(bounds.items())]

    picked = _picked(_resolve(project_wheel, machine, python, tmp_path, constraints=pins))

    assert {name: Version(picked[name]["metadata"]["version"]) for name in bounds} == bounds
