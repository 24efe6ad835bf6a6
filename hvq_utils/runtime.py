"""Platform and accelerator set-up, in one place: call `setup_runtime()` before Keras is imported.

    from hvq_utils.runtime import setup_runtime
    rt = setup_runtime(config, "batch_size")
    # prints e.g. "hvq runtime: kaggle, tpu x8 via jax, mixed_bfloat16, global batch 128 (16 per device)"
    with rt.scope():
        model = build_vqvae(config)

- TPU: the JAX backend, data-parallel over all cores. No platform ships tensorflow-tpu: Kaggle's
  TPU image has JAX with libtpu and only tensorflow-cpu, Colab's TPU runtime has no TensorFlow
  (the install cell adds tensorflow-cpu there, for the tf.data readers only).
- GPU: the TensorFlow backend (MirroredStrategy over several GPUs), or JAX where TensorFlow
  is missing.
- CPU: KERAS_BACKEND if set, else TensorFlow if installed, else JAX.
- Colab: `drive_root` mounts Google Drive for the notebooks' DRIVE parameter (see
  `artifacts.storage`).

Training batch settings (`batch_size`, `prior_batch_size`, `encode_batch_size`) count images
per device: the global batch is the setting times the devices, so a TPU v5e-8 trains on 8x the
batch of one GPU instead of splitting one GPU's batch into slivers.
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
from pathlib import Path

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

    def global_batch(self, per_device: int) -> int:
        """The batch of one step over all devices, for a per-device batch setting."""
        return per_device * self.devices

    def describe(self, config=None, batch_key: str | None = None) -> str:
        """The one summary line: platform, accelerator and devices, backend, precision and, for a
        batch setting of `config`, the global batch."""
        line = (
            f"hvq runtime: {self.platform}, {self.accelerator} x{self.devices} via {self.backend}, "
            f"{self.policy}"
        )
        if batch_key is not None and config is not None:
            per_device = getattr(config, batch_key)
            line += f", global batch {self.global_batch(per_device)} ({per_device} per device)"
        return line


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


# Signals each notebook service sets. Kaggle sets KAGGLE_KERNEL_RUN_TYPE ("Interactive" in the
# editor, "Batch" for a saved version); Colab sets COLAB_RELEASE_TAG. /kaggle/input is not one:
# kagglehub creates it on Colab too, and a local copy of Kaggle's image has it.
_COLAB_ENV = ("COLAB_RELEASE_TAG", "COLAB_JUPYTER_IP", "COLAB_BACKEND_VERSION")
_TPU_ENV = ("TPU_ACCELERATOR_TYPE", "TPU_NAME", "TPU_WORKER_ID", "COLAB_TPU_ADDR")


def detect_platform(environ=None, modules=None) -> str:
    """'kaggle', 'colab' or 'local', from the variables the notebook services set (defaults: this
    process's environment and imported modules)."""
    env = os.environ if environ is None else environ
    if env.get("KAGGLE_KERNEL_RUN_TYPE"):
        return "kaggle"
    if "google.colab" in (sys.modules if modules is None else modules) or any(map(env.get, _COLAB_ENV)):
        return "colab"
    return "local"


def kaggle_batch_run(environ=None) -> bool:
    """True in a Kaggle "Save Version" run, where nobody can use a widget."""
    return (os.environ if environ is None else environ).get("KAGGLE_KERNEL_RUN_TYPE") == "Batch"


def detect_accelerator(environ=None, glob_fn=glob.glob, exists=os.path.exists, which=shutil.which) -> str:
    """'tpu', 'gpu' or 'cpu', without importing a framework (so the backend is still free).

    TPU VMs (Kaggle's v5e-8, Colab's v5e-1) expose /dev/accel* or /dev/vfio/<n> and set
    TPU_ACCELERATOR_TYPE; NVIDIA GPUs expose /dev/nvidia0 and nvidia-smi.
    """
    env = os.environ if environ is None else environ
    if glob_fn("/dev/accel*") or glob_fn("/dev/vfio/[0-9]*") or any(map(env.get, _TPU_ENV)):
        return "tpu"
    if exists("/dev/nvidia0") or which("nvidia-smi"):
        return "gpu"
    return "cpu"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_backend(accelerator: str, environ=None, installed=_installed) -> str:
    """The Keras backend for an accelerator (see the module docstring)."""
    if accelerator == "tpu":
        return "jax"
    if accelerator == "gpu":
        return "tensorflow" if installed("tensorflow") else "jax"
    wanted = (os.environ if environ is None else environ).get("KERAS_BACKEND")
    if wanted in ("jax", "tensorflow"):
        return wanted
    return "tensorflow" if installed("tensorflow") else "jax"


_SAID: set = set()  # the batch settings whose summary line this process has printed


def setup_runtime(
    config=None, batch_key: str | None = None, accelerator: str = "auto", verbose: bool = True
) -> Runtime:
    """Pick the backend, devices and dtype policy; set them in Keras; print one summary line.

    config: a Config (its `mixed_precision` is used) or None for "auto". batch_key: the batch
    setting of the stage about to run ("batch_size", "prior_batch_size", "encode_batch_size"),
    whose global batch the line shows. accelerator: "auto", "tpu", "gpu" or "cpu". Calling it
    again returns the first choice (printing the line again only for a batch not yet shown).
    Raises RuntimeError if Keras was already imported with another backend (restart the kernel
    and call this first).
    """
    global _CURRENT
    configure_logging()
    if _CURRENT is not None:
        _say(_CURRENT, config, batch_key, verbose)
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
    _say(_CURRENT, config, batch_key, verbose)
    return _CURRENT


def _say(rt: Runtime, config, batch_key: str | None, verbose: bool) -> None:
    key = batch_key if config is not None else None
    if verbose and key not in _SAID and not (key is None and _SAID):
        _SAID.add(key)
        log.info(rt.describe(config, key))


# Google Drive on Colab: where `drive.mount` puts it, and the folder under it that holds every
# stage's "auto" input and output when a notebook sets DRIVE = True.
DRIVE_MOUNT = "/content/drive"
DRIVE_FOLDER = "MyDrive/hvq"


def drive_root(drive: bool | str = True, mount_point: str | os.PathLike | None = None) -> Path | None:
    """The folder on Google Drive for the notebooks' DRIVE parameter, mounted; None if `drive` is off.

    drive: False or None: no Drive (None is returned); True: /content/drive/MyDrive/hvq; a string:
    that folder instead, absolute or relative to the mount point ("MyDrive/hvq-whales").
    mount_point: where Drive is mounted (default DRIVE_MOUNT, /content/drive). Mounts
    Drive with google.colab's `drive.mount` unless MyDrive is already there (so once per VM,
    however often a notebook runs), and creates the folder. Raises RuntimeError (one line) off
    Colab, where there is no Drive to mount.
    """
    if not drive:
        return None
    platform = detect_platform()
    if platform != "colab":
        raise RuntimeError(
            f"DRIVE = {drive!r} mounts Google Drive, which only Colab has (this runtime is {platform}); "
            "set DRIVE = False and leave the paths on 'auto' or give them"
        )
    mount = Path(DRIVE_MOUNT if mount_point is None else mount_point)
    if not (mount / "MyDrive").is_dir():
        from google.colab import drive as google_drive

        google_drive.mount(str(mount))
        if not (mount / "MyDrive").is_dir():
            raise RuntimeError(f"Google Drive did not mount at {mount} (no MyDrive); run the cell again")
    root = mount / (DRIVE_FOLDER if drive is True else str(drive))
    root.mkdir(parents=True, exist_ok=True)
    return root
