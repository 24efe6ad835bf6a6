"""The package imports without side effects, and the model code runs without TensorFlow."""

import os
import subprocess
import sys
import textwrap

ENV = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=ENV, capture_output=True, text=True, timeout=300
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
