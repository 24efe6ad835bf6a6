"""The package imports without side effects, and the model code runs without TensorFlow."""

import os
import subprocess
import sys
import textwrap

ENV = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env or ENV, capture_output=True, text=True,
        timeout=300,
    )


def test_importing_the_package_loads_no_framework():
    r = _run("""
        import sys, hvq_utils
        from hvq_utils import get_preset
        get_preset("full")
        loaded = [m for m in ("keras", "tensorflow", "jax") if m in sys.modules]
        print(loaded)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_importing_the_modules_changes_no_environment_variable():
    from hvq_utils.runtime import TF_DEFAULTS  # what the package sets when a stage runs, not before

    env = {k: v for k, v in ENV.items() if k not in TF_DEFAULTS}
    r = _run(env=env, code="""
        import importlib, os, pkgutil
        import jax, keras, tensorflow  # frameworks set variables of their own on import
        import hvq_utils
        before = dict(os.environ)
        names = [m.name for m in pkgutil.walk_packages(hvq_utils.__path__, "hvq_utils.")]
        for name in names:
            importlib.import_module(name)
        print(len(names), {k: v for k, v in os.environ.items() if before.get(k) != v})
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    count, changed = r.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 20 and changed == "{}"


def test_models_build_and_run_with_tensorflow_unimportable():
    r = _run("""
        import sys
        class NoTF:
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    raise ImportError("tensorflow is blocked in this test")
        sys.meta_path.insert(0, NoTF())
        import numpy as np
        from hvq_utils import get_preset, build_vqvae, build_prior
        from hvq_utils.runtime import setup_runtime
        c = get_preset("smoke")
        setup_runtime(c)
        vq = build_vqvae(c)
        codes = vq.encode(np.random.rand(2, 32, 32, 3).astype("float32"))
        inputs = {"codes": codes["bottom"], "top": codes["top"], "middle": codes["middle"]}
        out = build_prior(c, "bottom")(inputs)
        print(tuple(out.shape), "tensorflow" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "(2, 16, 16, 4) False"


def test_notebooks_are_stored_without_outputs():
    import json
    from pathlib import Path

    notebooks = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
    assert [p.name[:2] for p in notebooks] == ["01", "02", "03", "04", "05", "06", "07"]
    for path in notebooks:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, path.name
