"""Platform and accelerator set-up, in one place: call `setup_runtime()` before Keras is imported.

    from hvq_utils.runtime import setup_runtime
    rt = setup_runtime(config)        # prints e.g. "hvq runtime: kaggle, tpu x8 via jax, mixed_bfloat16"
    with rt.scope():
        model = build_vqvae(config)

- TPU: the JAX backend, data-parallel over all cores (Kaggle's TPU image ships JAX with libtpu
  and only tensorflow-cpu; Colab's TPU runtime has no TensorFlow at all).
- GPU: the TensorFlow backend (MirroredStrategy over several GPUs), or JAX where TensorFlow
  is missing.
- CPU: KERAS_BACKEND if set, else TensorFlow if installed, else JAX.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
import shutil
import sys
from dataclasses import dataclass

_POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
_AUTO_POLICY = {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}


@dataclass
class Runtime:
    """What `setup_runtime` chose. `strategy` is a tf.distribute strategy on several GPUs."""

    platform: str  # "kaggle" | "colab" | "local"
    accelerator: str  # "tpu" | "gpu" | "cpu"
    backend: str  # "jax" | "tensorflow"
    devices: int
    policy: str  # Keras dtype policy, e.g. "mixed_bfloat16"
    strategy: object | None = None

    def scope(self):
        """Context in which to build models (the strategy's scope on several GPUs)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def check_batch(self, key: str, value: int) -> None:
        """Refuse a global batch that does not split evenly over the devices."""
        if value % self.devices:
            raise ValueError(
                f"{key}={value} does not split over {self.devices} devices; use a multiple of {self.devices}"
            )

    def describe(self) -> str:
        return (
            f"hvq runtime: {self.platform}, {self.accelerator} x{self.devices} via {self.backend}, "
            f"{self.policy}"
        )


_CURRENT: Runtime | None = None
log = logging.getLogger(__name__)


def configure_logging(level: int = logging.INFO) -> None:
    """Show the package's log lines (stage progress, results) on stdout, once.

    Library modules only log; the CLI and `setup_runtime` (which every notebook calls)
    call this, and a handler the user has added to the "hvq_utils" logger is kept.
    """
    logger = logging.getLogger("hvq_utils")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

# TensorFlow settings read once, when TensorFlow loads; each measured on a 2-core CPU
# (see the README's figures). A value the user has set is kept.
TF_DEFAULTS = {
    # The BFC allocator instead of malloc for CPU tensors: the 512x512 image reader ran 5-8x
    # faster with it (89 -> 701 images/s one pass, 124 -> 603 training).
    "TF_CPU_ALLOCATOR_USE_BFC": "true",
    # oneDNN kernels for convolutions on CPUs where TensorFlow does not enable them itself:
    # about 2x faster VQ-VAE training and reconstruction on the CPU.
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",  # no INFO/WARNING lines about CPU instructions in notebooks
}


def tf_defaults() -> None:
    """Set TF_DEFAULTS in the environment where unset; effective only before TensorFlow loads."""
    for key, value in TF_DEFAULTS.items():
        os.environ.setdefault(key, value)


def detect_platform() -> str:
    """'kaggle', 'colab' or 'local', from the environment the notebook services set."""
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or os.path.isdir("/kaggle/input"):
        return "kaggle"
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    return "local"


def detect_accelerator() -> str:
    """'tpu', 'gpu' or 'cpu', without importing a framework (so the backend is still free)."""
    tpu_env = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID")
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") or any(map(os.environ.get, tpu_env)):
        return "tpu"
    if os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi"):
        return "gpu"
    return "cpu"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_backend(accelerator: str) -> str:
    """The Keras backend for an accelerator (see the module docstring)."""
    if accelerator == "tpu":
        return "jax"
    if accelerator == "gpu":
        return "tensorflow" if _installed("tensorflow") else "jax"
    wanted = os.environ.get("KERAS_BACKEND")
    if wanted in ("jax", "tensorflow"):
        return wanted
    return "tensorflow" if _installed("tensorflow") else "jax"


def setup_runtime(config=None, accelerator: str = "auto", verbose: bool = True) -> Runtime:
    """Pick the backend, devices and dtype policy; set them in Keras; print one line.

    config: a Config (its `mixed_precision` is used) or None for "auto". accelerator: "auto",
    "tpu", "gpu" or "cpu". Calling it again returns the first choice. Raises RuntimeError if
    Keras was already imported with another backend (restart the kernel and call this first).
    """
    global _CURRENT
    configure_logging()
    if _CURRENT is not None:
        return _CURRENT
    if accelerator not in ("auto", "tpu", "gpu", "cpu"):
        raise ValueError(f"accelerator={accelerator!r} is unknown; use auto, tpu, gpu or cpu")
    acc = detect_accelerator() if accelerator == "auto" else accelerator
    backend = choose_backend(acc)
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise RuntimeError(
                f"Keras was imported with the {current} backend before setup_runtime() chose "
                f"{backend}; restart the kernel and call setup_runtime() before importing keras"
            )
    os.environ["KERAS_BACKEND"] = backend
    tf_defaults()
    import keras

    devices, strategy = 1, None
    if backend == "jax":
        import jax

        platform_devices = [d for d in jax.devices() if acc == "cpu" or d.platform != "cpu"]
        devices = len(platform_devices) or 1
        if devices > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=platform_devices))
    else:
        import tensorflow as tf

        # No TF32 matrix passes (Ampere and newer GPUs): the nearest-code search and the
        # sampler must compute in full float32 (mixed precision still uses float16).
        tf.config.experimental.enable_tensor_float_32_execution(False)
        if acc == "gpu":
            gpus = tf.config.list_physical_devices("GPU")
            devices = max(1, len(gpus))
            if len(gpus) > 1:
                strategy = tf.distribute.MirroredStrategy()

    mode = getattr(config, "mixed_precision", "auto")
    policy = _AUTO_POLICY[acc] if mode == "auto" else _POLICIES[mode]
    keras.mixed_precision.set_global_policy(policy)
    _CURRENT = Runtime(detect_platform(), acc, backend, devices, policy, strategy)
    if verbose:
        log.info(_CURRENT.describe())
    return _CURRENT
