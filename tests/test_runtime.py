import os
import subprocess
import sys
import textwrap

from hvq_utils.runtime import choose_backend


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )


def test_tpu_always_goes_through_jax():
    assert choose_backend("tpu") == "jax"


def test_cpu_respects_the_users_backend(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert choose_backend("cpu") == "jax"


def test_setup_prints_one_line_and_spreads_over_simulated_devices():
    r = _run(
        """
        from hvq_utils.runtime import setup_runtime
        rt = setup_runtime(accelerator="cpu")
        import keras
        print(type(keras.distribution.distribution()).__name__, keras.backend.backend())
        """,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.strip().splitlines()
    assert first == "hvq runtime: local, cpu x4 via jax, float32"
    assert second == "DataParallel jax"


def test_setup_after_keras_with_another_backend_says_restart():
    r = _run(
        """
        import keras
        from hvq_utils.runtime import setup_runtime
        setup_runtime(accelerator="tpu")
        """,
        KERAS_BACKEND="tensorflow",
    )
    assert r.returncode != 0
    assert "restart the kernel and call setup_runtime() before importing keras" in r.stderr
