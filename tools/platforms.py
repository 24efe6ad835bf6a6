"""Stand-ins of the notebook platforms: each one's Python and packages, the notebooks' own
install cell, then notebooks 01 to 07 chained at the smoke preset on the platform's backend.

    python tools/platforms.py                 # every platform in data/platforms.json, then the floor
    python tools/platforms.py colab-gpu floor # some of them
    make platforms                            # the same as the first line

A platform's stand-in (data/platforms.json) is a venv with its Python minor version (pyenv's,
else pythonX.Y on PATH) and its packages at their versions: JAX's CPU build stands in for the
TPU and CUDA plugins. It is built once under .platforms/<name>/base and rebuilt only when its
entry in data/platforms.json changes. Each run copies it to .platforms/<name>/run, attaches the
hvq_utils wheel built from this checkout under a folder that stands in for /kaggle/input (as
the Kaggle wheel dataset is attached), runs the first notebook's install cell in IPython, and
fails if the install changed the version of any package the platform ships. Then notebooks
01 to 07 run in that venv's Jupyter kernel with every input and output "auto" (so each finds
the previous one's output, as on the platform), at the smoke preset, on the sample images.

The floor is a venv with the lowest Python and the lowest version of every requirement that
pyproject.toml accepts (the base, [cpu] and [jax]); there the CLI runs the smoke pipeline on
TensorFlow and on JAX.

This file runs with any Python 3.11+ and the standard library; its `--notebooks` option runs
inside a stand-in, where nbclient and nbformat come from the platform's own packages.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ROOT / "data" / "platforms.json"
WORK = ROOT / ".platforms"
NOTEBOOKS = (
    "01_prepare_data", "02_train_vqvae", "03_encode_latents", "04_train_top_prior",
    "05_train_middle_prior", "06_train_bottom_prior", "07_sample",
)
KAGGLE_INPUT = "/kaggle/input"  # where the install cell looks for the attached wheel
FLOOR_PYTHON = "3.10"
# Distributions that stand in for what a CPU machine cannot run: the TPU's libtpu and the GPU's
# CUDA plugins are left out, and JAX's CPU jaxlib (the same version) serves.
NOT_ON_CPU = ("libtpu", "jax-cuda12-plugin", "jax-cuda12-pjrt")


class StandInError(RuntimeError):
    """A stand-in that failed; the message says where."""


def say(*parts) -> None:
    print("[platforms]", *parts, flush=True)


def run(cmd: list, env: dict | None = None, cwd: Path | None = None, quiet: bool = False) -> str:
    """Run `cmd`; its output is printed (or returned only, with `quiet`); a failure raises."""
    done = subprocess.run(
        [str(c) for c in cmd], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not quiet or done.returncode != 0:
        print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise StandInError(f"`{' '.join(str(c) for c in cmd[:6])} ...` exited {done.returncode}")
    return done.stdout


def find_python(minor: str) -> str:
    """The interpreter for Python `minor` ("3.12"): pyenv's newest X.Y.*, else pythonX.Y on PATH."""
    if shutil.which("pyenv"):
        listed = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True)
        versions = listed.stdout.split()
        matching = sorted(
            (v for v in versions if re.fullmatch(re.escape(minor) + r"\.\d+", v)),
            key=lambda v: int(v.rsplit(".", 1)[1]),
        )
        if matching:
            env = {**os.environ, "PYENV_VERSION": matching[-1]}
            found = subprocess.run(["pyenv", "which", "python"], env=env, capture_output=True, text=True)
            if found.returncode == 0:
                return found.stdout.strip()
    on_path = shutil.which(f"python{minor}")
    if on_path:
        return on_path
    raise StandInError(
        f"no Python {minor} here: install it (pyenv install {minor}) or put python{minor} on PATH"
    )


def installed_versions(python: Path) -> dict[str, str]:
    """{normalised distribution name: version} of everything installed in `python`'s environment."""
    code = (
        "import importlib.metadata as m, json, re\n"
        "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version"
        " for d in m.distributions() if d.metadata['Name']}))"
    )
    return json.loads(run([python, "-I", "-c", code], quiet=True))  # -I: not the checkout's egg-info


def python_version(python: Path) -> str:
    return run([python, "-c", "import platform; print(platform.python_version())"], quiet=True).strip()


def build_venv(
    folder: Path, python_exe: str, requirements: list[str], stamp: str, constraints: list[str] = ()
) -> None:
    """A venv at `folder` with `requirements` installed, unless one with the same `stamp` is there."""
    stamp_file = folder / ".hvq-stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        say(f"{folder.relative_to(ROOT)}: up to date")
        return
    shutil.rmtree(folder, ignore_errors=True)
    say(f"{folder.relative_to(ROOT)}: building with {python_exe}")
    run([python_exe, "-m", "venv", folder])
    py = folder / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], quiet=True)
    cmd = [py, "-m", "pip", "install", "-q", "--only-binary=:all:", *requirements]
    if constraints:
        (folder / "constraints.txt").write_text("".join(f"{c}\n" for c in constraints))
        cmd += ["-c", folder / "constraints.txt"]
    run(cmd)
    stamp_file.write_text(stamp)


def build_wheel() -> Path:
    """hvq_utils' wheel, built from this checkout into .platforms/wheel/."""
    out = WORK / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", ROOT, "-w", out], quiet=True)
    (wheel,) = out.glob("hvq_utils-*.whl")
    return wheel


def install_cell() -> str:
    """The install cell (first code cell) of notebook 01, as the notebook stores it."""
    nb = json.loads((ROOT / "notebooks" / f"{NOTEBOOKS[0]}.ipynb").read_text(encoding="utf-8"))
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def stand_in_env(backend: str) -> dict:
    """The environment the notebooks see: a CPU machine, neither Kaggle nor Colab, `backend` for Keras."""
    foreign = ("KAGGLE_", "COLAB_", "PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.update(KERAS_BACKEND=backend, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return env


def platform(name: str, info: dict, wheel: Path) -> dict:
    """Build (or reuse) the stand-in of `name`, install hvq_utils by the install cell, run 01-07."""
    started = time.monotonic()
    home = WORK / name
    packages = {n: v for n, v in info["packages"].items() if v is not None}
    python_exe = find_python(info["python"])
    stamp = json.dumps({"python": python_exe, "packages": packages}, sort_keys=True)
    build_venv(home / "base", python_exe, [f"{n}=={v}" for n, v in packages.items()], stamp)
    shipped = installed_versions(home / "base" / "bin" / "python")
    for n, v in packages.items():
        if shipped.get(n) != v:
            raise StandInError(f"{name}: the stand-in has {n} {shipped.get(n)}, data/platforms.json says {v}")
    built_s = time.monotonic() - started

    venv = home / "run"
    shutil.rmtree(venv, ignore_errors=True)
    shutil.copytree(home / "base", venv, symlinks=True)
    py = venv / "bin" / "python"
    inputs = home / "input"
    shutil.rmtree(inputs, ignore_errors=True)
    (inputs / "hvq-utils-wheel").mkdir(parents=True)
    shutil.copy2(wheel, inputs / "hvq-utils-wheel" / wheel.name)
    cell = install_cell()
    if cell.count(KAGGLE_INPUT) != 1:
        raise StandInError(f"the install cell should name {KAGGLE_INPUT} once, to attach the wheel there")
    (home / "install.ipy").write_text(cell.replace(KAGGLE_INPUT, str(inputs)))
    env = stand_in_env(info["backend"])
    t0 = time.monotonic()
    ipython = [py, "-m", "IPython", "--quick", "--no-banner", "--no-term-title"]
    run([*ipython, home / "install.ipy"], env=env, cwd=home)
    install_s = time.monotonic() - t0
    after = installed_versions(py)
    if after.get("hvq-utils") is None:
        raise StandInError(f"{name}: the install cell ran, but hvq_utils is not installed")
    changed = {n: (v, after.get(n)) for n, v in shipped.items() if after.get(n) != v}
    if changed:
        raise StandInError(
            f"{name}: the install cell changed what the platform ships: "
            + ", ".join(f"{n} {old} -> {new}" for n, (old, new) in sorted(changed.items()))
        )
    added = sorted(f"{n}=={v}" for n, v in after.items() if n not in shipped)
    expected = set(info.get("setup_installs", {})) | {"hvq-utils"}
    say(f"{name}: the install cell added {', '.join(added)}; changed nothing the platform ships")
    for n, spec in info.get("setup_installs", {}).items():
        if after.get(n) != spec["version"]:
            raise StandInError(
                f"{name}: the install cell should add {n} {spec['version']}; found {after.get(n)}"
            )
    if not expected <= {a.split("==")[0] for a in added}:
        raise StandInError(f"{name}: the install cell should add {sorted(expected)}; it added {added}")

    work = home / "notebooks"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    t0 = time.monotonic()
    run([py, Path(__file__), "--notebooks", work], env=env, cwd=work)
    notebooks_s = time.monotonic() - t0
    return {
        "python": python_version(py),
        "backend": info["backend"],
        **{n: after.get(n) for n in ("tensorflow", "tensorflow-cpu", "keras", "jax", "numpy", "protobuf")},
        "build_s": round(built_s, 1),
        "install_cell_s": round(install_s, 1),
        "notebooks_s": round(notebooks_s, 1),
    }


def run_notebooks(work: Path) -> None:
    """Inside a stand-in: notebooks 01-07 at the smoke preset, chained by their "auto" paths."""
    import nbformat
    from nbclient import NotebookClient

    params = {"PRESET": "smoke", "SRC": "sample", "BATCH_SIZE": 4, "SOURCES": 2}
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        names = set(re.findall(r"^([A-Z_]+)\s*=", nb.cells[at].source, flags=re.M))
        lines = [f"{k} = {v!r}" for k, v in params.items() if k in names]
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell("# set by tools/platforms.py\n" + "\n".join(lines)))
        t0 = time.monotonic()
        resources = {"metadata": {"path": str(work)}}
        NotebookClient(nb, timeout=1800, kernel_name="python3", resources=resources).execute()
        say(f"{name}: ran in {time.monotonic() - t0:.0f} s")
    outputs = ["data", "vqvae", "codes", "prior-top", "prior-middle", "prior-bottom"]
    missing = [o for o in outputs if not (work / "runs" / o / "manifest.json").is_file()]
    gallery = work / "runs" / "samples" / "new" / "gallery.zip"
    if missing or not gallery.is_file():
        raise StandInError(f"the notebooks ran, but runs/ lacks {missing or [gallery.name]}")


def lower_bounds() -> list[str]:
    """Every requirement of the base, [cpu] and [jax] that applies to this machine, pinned to
    its lowest accepted version (`>=X` -> `==X`)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["cpu"]
    lines += project["optional-dependencies"]["jax"]
    pins = []
    for line in lines:
        spec, _, marker = line.partition(";")
        if marker.strip() and not _marker_applies(marker, FLOOR_PYTHON):
            continue
        found = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*.*?>=\s*([0-9][0-9A-Za-z.]*)", spec)
        if found:
            pins.append(f"{found.group(1)}=={found.group(3)}")
    return pins


def _packaging():
    """The `packaging` distribution's modules: installed, else the copy pip vendors."""
    try:
        from packaging import markers, version
    except ImportError:
        from pip._vendor.packaging import markers, version
    return markers, version


def _marker_applies(marker: str, python: str) -> bool:
    """Whether an environment marker holds for this machine with Python `python`."""
    markers, _ = _packaging()
    return markers.Marker(marker).evaluate({"python_version": python, "python_full_version": python + ".0"})


def same_version(a: str | None, b: str) -> bool:
    """Whether two version strings name one version ("1.26" and "1.26.0" do)."""
    _, version = _packaging()
    return a is not None and version.Version(a) == version.Version(b)


def floor(wheel: Path) -> dict:
    """The lowest Python and requirement versions pyproject.toml accepts: the smoke pipeline by the
    CLI, on TensorFlow and on JAX."""
    home = WORK / "floor"
    pins = lower_bounds()
    python_exe = find_python(FLOOR_PYTHON)
    started = time.monotonic()
    stamp = json.dumps({"python": python_exe, "pins": pins})
    build_venv(home / "venv", python_exe, [f"{wheel}[cpu,jax]"], stamp, constraints=pins)
    py = home / "venv" / "bin" / "python"
    # The requirements are the pins (the stamp); this checkout's code is reinstalled every run.
    run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel], quiet=True)
    versions = installed_versions(py)
    for pin in pins:
        n, v = pin.split("==")
        n = re.sub(r"[-_.]+", "-", n).lower()
        if not same_version(versions.get(n), v):
            raise StandInError(f"floor: {n} is {versions.get(n)}, not the lower bound {v}")
    built_s = time.monotonic() - started
    timings = {}
    for backend in ("tensorflow", "jax"):
        out = home / f"demo-{backend}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.monotonic()
        demo = [py, "-m", "hvq_utils", "demo", "--preset", "smoke", "--out", out]
        run(demo, env=stand_in_env(backend), cwd=home)
        timings[f"{backend}_s"] = round(time.monotonic() - t0, 1)
    return {"python": python_version(py), "pins": pins, "build_s": round(built_s, 1), **timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="platforms of data/platforms.json, or floor (default: all)")
    parser.add_argument("--notebooks", type=Path, metavar="WORK", help="(in a stand-in) run 01-07 in WORK")
    args = parser.parse_args(argv)
    if args.notebooks:
        run_notebooks(args.notebooks)
        return 0
    platforms = json.loads(PLATFORMS.read_text())["platforms"]
    names = args.names or [*platforms, "floor"]
    unknown = [n for n in names if n not in platforms and n != "floor"]
    if unknown:
        parser.error(f"unknown platform {unknown[0]}; known: {', '.join(platforms)}, floor")
    WORK.mkdir(exist_ok=True)
    wheel = build_wheel()
    results, failed = {}, []
    for name in names:
        t0 = time.monotonic()
        say(f"{name}: start")
        try:
            results[name] = floor(wheel) if name == "floor" else platform(name, platforms[name], wheel)
            results[name]["total_s"] = round(time.monotonic() - t0, 1)
            say(f"{name}: passed in {time.monotonic() - t0:.0f} s")
        except StandInError as e:
            failed.append(name)
            say(f"{name}: FAILED: {e}")
    print(json.dumps(results, indent=1))
    if failed:
        say(f"failed: {', '.join(failed)}")
        return 1
    say(f"{len(results)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
