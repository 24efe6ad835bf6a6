import os
import subprocess
import sys
import textwrap

import pytest

from hvq_utils.runtime import choose_backend, detect_accelerator, detect_platform, kaggle_batch_run


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
        from hvq_utils import get_preset
        from hvq_utils.runtime import setup_runtime
        rt = setup_runtime(get_preset("smoke"), "batch_size", accelerator="cpu")
        setup_runtime(get_preset("smoke"), "batch_size")  # said once
        import keras
        print(type(keras.distribution.distribution()).__name__, keras.backend.backend())
        setup_runtime(get_preset("smoke"), "prior_batch_size")  # another stage's batch: its own line
        """,
        KERAS_BACKEND="jax",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    assert r.returncode == 0, r.stderr
    first, second, third = r.stdout.strip().splitlines()
    assert first == "hvq runtime: local, cpu x4 via jax, float32, global batch 16 (4 per device)"
    assert second == "DataParallel jax"
    assert third == "hvq runtime: local, cpu x4 via jax, float32, global batch 16 (4 per device)"


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


# What the machine shows -> (platform, accelerator, backend). Each row is a real set-up.
_KAGGLE = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_URL_BASE": "https://www.kaggle.com"}
_COLAB = {"COLAB_RELEASE_TAG": "release-colab_20261101-060058_RC00"}
DECISIONS = [
    # name, environment, device files, nvidia-smi, TensorFlow installed, expected
    ("kaggle tpu v5e-8", {**_KAGGLE, "TPU_ACCELERATOR_TYPE": "v5litepod-8"}, ["/dev/vfio/0"], False, True,
     ("kaggle", "tpu", "jax")),
    ("kaggle t4 x2, saved version", {**_KAGGLE, "KAGGLE_KERNEL_RUN_TYPE": "Batch"}, ["/dev/nvidia0"], True,
     True, ("kaggle", "gpu", "tensorflow")),
    ("kaggle cpu", _KAGGLE, [], False, True, ("kaggle", "cpu", "tensorflow")),
    ("colab tpu v5e-1, no tensorflow", {**_COLAB, "TPU_ACCELERATOR_TYPE": "v5litepod-1"}, ["/dev/accel0"],
     False, False, ("colab", "tpu", "jax")),
    ("colab gpu with /kaggle/input from kagglehub", _COLAB, ["/dev/nvidia0", "/kaggle/input"], True, True,
     ("colab", "gpu", "tensorflow")),
    ("colab cpu with /kaggle/input", _COLAB, ["/kaggle/input"], False, True, ("colab", "cpu", "tensorflow")),
    ("local copy of kaggle's image", {}, ["/kaggle/input", "/kaggle/working"], False, True,
     ("local", "cpu", "tensorflow")),
    ("local gpu without tensorflow", {}, ["/dev/nvidia0"], True, False, ("local", "gpu", "jax")),
    ("local cpu, user asks for jax", {"KERAS_BACKEND": "jax"}, [], False, True, ("local", "cpu", "jax")),
    ("local cpu, nothing asked", {}, [], False, True, ("local", "cpu", "tensorflow")),
]


@pytest.mark.parametrize("name,env,paths,smi,tf,expected", DECISIONS, ids=[d[0] for d in DECISIONS])
def test_platform_accelerator_and_backend_decision_table(name, env, paths, smi, tf, expected, monkeypatch):
    # The faked device files exist for any check that looks at the file system.
    for fn in ("exists", "isdir", "lexists"):
        monkeypatch.setattr(f"os.path.{fn}", lambda p, paths=paths: str(p).rstrip("/") in paths)
    def glob_fn(pattern):
        prefix = pattern.split("*")[0].split("[")[0]
        return [p for p in paths if p.startswith(prefix) and p != prefix.rstrip("/")]

    def which(cmd):
        return "/usr/bin/nvidia-smi" if smi else None

    accelerator = detect_accelerator(env, glob_fn=glob_fn, exists=lambda p: p in paths, which=which)
    backend = choose_backend(accelerator, env, installed=lambda module: tf)
    assert (detect_platform(env, modules={}), accelerator, backend) == expected


def test_colab_is_recognised_by_its_module_too():
    assert detect_platform({}, modules={"google.colab": object()}) == "colab"


def test_a_saved_kaggle_version_is_a_batch_run():
    assert kaggle_batch_run({"KAGGLE_KERNEL_RUN_TYPE": "Batch"})
    assert not kaggle_batch_run({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
    assert not kaggle_batch_run({})


def test_drive_root_off_needs_nothing_and_a_failed_mount_is_one_line(monkeypatch, tmp_path):
    import types

    from hvq_utils import runtime

    assert runtime.drive_root(False) is None and runtime.drive_root(None) is None
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda path: None)  # returns, but nothing appears
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    with pytest.raises(RuntimeError, match=r"^Google Drive did not mount at .*; run the cell again$"):
        runtime.drive_root(True, mount_point=tmp_path / "drive")
