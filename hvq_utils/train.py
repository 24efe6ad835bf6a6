"""One resumable training loop for the VQ-VAE and the three priors.

Training state that must survive a cut session (model, optimizer, codebook statistics, step)
is saved together as `checkpoints/step-NNNNNNN.keras` every `checkpoint_every` steps and at
the end, written under a temporary name and renamed, so a kill at any moment leaves either
the old checkpoint or the new one, never half of one. Running the same command again loads
the newest checkpoint and trains on to exactly `steps` (the optimizer's iteration count).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from hvq_utils.config import LEVELS, Config
from hvq_utils.manifest import (
    ManifestError,
    atomic_write_bytes,
    describe,
    read_manifest,
    write_manifest,
)

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
# Settings that may change between a run and its resumption.
_RESUMABLE_KEYS = {"steps", "prior_steps", "checkpoint_every", "mixed_precision"}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def _checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in (out_dir / CHECKPOINTS).glob("step-*.keras"):
        try:
            found.append((int(p.stem.split("-")[1]), p))
        except ValueError:
            continue
    return sorted(found)


def _save_checkpoint(model, out_dir: Path, step: int, keep: int = 2) -> Path:
    """Save under a temporary directory, then rename into place (atomic on one file system)."""
    ckpt_dir = out_dir / CHECKPOINTS
    tmp = ckpt_dir / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    final = ckpt_dir / f"step-{step:07d}.keras"
    model.save(tmp / final.name)
    with open(tmp / final.name, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp / final.name, final)
    shutil.rmtree(tmp, ignore_errors=True)
    for _, old in _checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def _check_run(out_dir: Path, config: Config, inputs: dict[str, dict]) -> None:
    """Refuse to resume a run made with other settings or other input artifacts."""
    record = {"config": config.to_dict(), "inputs": {k: m["hash"] for k, m in inputs.items()}}
    path = out_dir / RUN_FILE
    if path.exists() and _checkpoints(out_dir):
        old = json.loads(path.read_text())
        for role, h in record["inputs"].items():
            if old["inputs"].get(role) != h:
                raise ManifestError(
                    f"{out_dir} holds a run trained on other {role} (hash "
                    f"{str(old['inputs'].get(role))[:8]}) than {describe(inputs[role])}; "
                    "use a new --out, or delete it to start over"
                )
        changed = [
            k for k, v in record["config"].items() if k not in _RESUMABLE_KEYS and old["config"].get(k) != v
        ]
        if changed:
            k = changed[0]
            raise ValueError(
                f"{out_dir} holds a run with {k}={old['config'].get(k)!r}, not {record['config'][k]!r}; "
                "resume with the same settings, or use a new --out"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(record, indent=2).encode())


def _callbacks(out_dir: Path, total: int, every: int, state: dict) -> list:
    import keras

    class Guard(keras.callbacks.Callback):
        """Stops at exactly `total` steps, on a non-finite loss, and checkpoints each epoch."""

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state["bad_step"] = int(self.model.optimizer.iterations)
                self.model.stop_training = True
            elif int(self.model.optimizer.iterations) >= total:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if "bad_step" in state:
                return
            step = int(self.model.optimizer.iterations)
            if logs is not None:
                logs["step"] = step  # log.csv's x axis: epochs restart their count on resume
            state["logs"] = dict(logs or {})
            _save_checkpoint(self.model, out_dir, step)
            state["step"] = step

    callbacks = [Guard(), keras.callbacks.CSVLogger(str(out_dir / "log.csv"), append=True)]
    try:
        import tensorboard  # noqa: F401  (Keras' TensorBoard writer needs it and TensorFlow)
        import tensorflow  # noqa: F401

        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), update_freq=every))
    except ImportError:
        print("TensorBoard logs skipped: TensorFlow or TensorBoard is not installed (log.csv has the curves)")
    return callbacks


def fit_resumable(
    build: Callable[[], object],
    train_ds,
    val_ds,
    out_dir: str | os.PathLike,
    steps: int,
    checkpoint_every: int,
    config: Config,
    inputs: dict[str, dict],
    verbose: int | str = "auto",
):
    """Train `build()` (a compiled Keras model) to exactly `steps`, resuming if checkpoints exist.

    train_ds: an endless dataset (it is repeated by the reader); val_ds: a finite one or None,
    evaluated at every checkpoint. Returns (model, logs of the last checkpoint).
    Raises NonFiniteLossError if the loss stops being finite; the last good checkpoint stays.
    """
    from hvq_utils.saving import load_model

    out_dir = Path(out_dir)
    _check_run(out_dir, config, inputs)
    found = _checkpoints(out_dir)
    if found:
        done, path = found[-1]
        model = load_model(path)
        print(f"resuming from {path} (step {done} of {steps})")
    else:
        done, model = 0, build()
    if done > steps:
        raise ValueError(
            f"{out_dir} is already at step {done}, past steps={steps}; raise --steps or use a new --out"
        )
    state: dict = {"step": done, "logs": {}}
    if done < steps:
        model.fit(
            train_ds,
            epochs=math.ceil(steps / checkpoint_every),
            initial_epoch=done // checkpoint_every,
            steps_per_epoch=checkpoint_every,
            validation_data=val_ds,
            shuffle=False,  # the reader shuffles; Keras would only warn that it cannot
            callbacks=_callbacks(out_dir, steps, checkpoint_every, state),
            verbose=verbose,
        )
    if "bad_step" in state:
        last = _checkpoints(out_dir)
        kept = f"the checkpoint at step {last[-1][0]} is kept" if last else "no checkpoint was made yet"
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {state['bad_step']}; training stopped and "
            f"{kept}; try a lower learning rate (--set learning_rate=...) or mixed_precision=off"
        )
    return model, state["logs"]


def _prepare_runtime(config: Config):
    from hvq_utils.runtime import setup_runtime

    rt = setup_runtime(config)
    for key in ("batch_size", "prior_batch_size"):
        if getattr(config, key) % rt.devices:
            raise ValueError(
                f"{key}={getattr(config, key)} does not split over {rt.devices} devices; "
                f"use a multiple of {rt.devices}"
            )
    return rt


def _final_save(model, out_dir: Path, name: str) -> Path:
    """Save the finished model as out_dir/name (a .keras file), atomically."""
    path, tmp = out_dir / name, out_dir / f".tmp-{name}"
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _finished(
    out_dir: Path, stage: str, config: Config, inputs: dict[str, dict], model_file: str,
    level: str | None = None,
):
    """The manifest of a run in `out_dir` that already finished with exactly this config,
    these inputs and this level (priors; None for the VQ-VAE), so that a re-run changes
    nothing downstream; else None."""
    try:
        done = read_manifest(out_dir, stage)
    except ManifestError:
        return None
    same_inputs = all(
        done["inputs"].get(role, {}).get("hash") == m["hash"] for role, m in inputs.items()
    )
    same_run = same_inputs and done["config"] == config.to_dict() and done.get("level") == level
    if same_run and (out_dir / model_file).is_file():
        print(f"{out_dir} already holds this finished run ({done['steps']} steps); nothing to do")
        return done
    return None


def train_vqvae(data_dir: str | os.PathLike, out_dir: str | os.PathLike, config: Config) -> dict:
    """Stage 02: train the VQ-VAE on `prepare`'s TFRecords; returns the manifest of `out_dir`.

    `out_dir` gets vqvae.keras, manifest.json (steps, validation metrics, data hash, config),
    log.csv, tensorboard/ and checkpoints/. Re-running after an interruption resumes.
    """
    data = read_manifest(data_dir, "prepare")
    if data["config"].get("image_size") != config.image_size:
        raise ManifestError(
            f"{describe(data)} holds {data['config'].get('image_size')}-pixel images but "
            f"image_size={config.image_size}; prepare the data with the same preset or --set image_size"
        )
    if data["splits"].get("train", 0) < config.batch_size:
        raise ValueError(
            f"{data_dir} has {data['splits'].get('train', 0)} training images, fewer than "
            f"batch_size={config.batch_size}; add images or lower --set batch_size"
        )
    done = _finished(Path(out_dir), "train-vqvae", config, {"data": data}, "vqvae.keras")
    if done is not None:
        return done
    rt = _prepare_runtime(config)
    from hvq_utils.data import image_dataset
    from hvq_utils.vqvae import build_vqvae, compile_vqvae

    train_ds = image_dataset(
        data_dir, "train", config.batch_size, training=True, flip=config.flip, config=config
    )
    val_ds = None
    if data["splits"].get("validation", 0):
        val_ds = image_dataset(data_dir, "validation", config.batch_size, training=False, config=config)

    def build():
        with rt.scope():
            return compile_vqvae(build_vqvae(config), config)

    out = Path(out_dir)
    start = time.time()
    model, _ = fit_resumable(
        build, train_ds, val_ds, out, config.steps, config.checkpoint_every, config, {"data": data}
    )
    scores = model.evaluate(val_ds if val_ds is not None else train_ds.take(4), verbose=0, return_dict=True)
    _final_save(model, out, "vqvae.keras")
    metrics = {
        "split": "validation" if val_ds is not None else "train",
        "mse": float(scores["mse"]),
        "psnr": float(scores["psnr"]),
        "code_usage": {lv: float(scores[f"{lv}_usage"]) for lv in LEVELS},
        "perplexity": {lv: float(scores[f"{lv}_perplexity"]) for lv in LEVELS},
    }
    manifest = write_manifest(
        out,
        "train-vqvae",
        config.to_dict(),
        {"data": data},
        steps=int(model.optimizer.iterations),
        metrics=metrics,
        files=["vqvae.keras"],
        image_size=config.image_size,
        grid_sizes=dict(zip(LEVELS, config.grid_sizes, strict=True)),
        codebook_sizes=dict(zip(LEVELS, config.codebook_sizes, strict=True)),
        seconds_this_session=round(time.time() - start, 1),
    )
    print(
        f"vqvae: {manifest['steps']} steps; {metrics['split']} mse {metrics['mse']:.5f}, "
        f"psnr {metrics['psnr']:.2f} dB; usage "
        + ", ".join(f"{lv} {metrics['code_usage'][lv]:.0%}" for lv in LEVELS)
    )
    return manifest


def prior_inputs(level: str) -> tuple[str, ...]:
    """The code grids a level's prior reads: its own, then the levels above it."""
    return LEVELS[: LEVELS.index(level) + 1]


def check_codes_fit(codes: dict, config: Config, level: str) -> None:
    """Refuse codes whose codebook sizes or grids differ from `config` (before any work)."""
    for lv in prior_inputs(level):
        want_k, want_g = config.codebook_sizes[config.level(lv)], config.grid_sizes[config.level(lv)]
        have_k, have_g = codes["codebook_sizes"][lv], codes["grid_sizes"][lv]
        if (have_k, have_g) != (want_k, want_g):
            raise ManifestError(
                f"the {lv} codes of {describe(codes)} have {have_k} codes on a {have_g}x{have_g} "
                f"grid, but preset {config.preset!r} gives {want_k} codes on {want_g}x{want_g}; "
                "train the prior with the preset (and --set values) the VQ-VAE was trained with"
            )


def train_prior(level: str, codes_dir: str | os.PathLike, out_dir: str | os.PathLike, config: Config) -> dict:
    """Stages 04-06: train one level's prior on `encode`'s code TFRecords; returns its manifest.

    `out_dir` gets prior.keras and manifest.json (steps, bits per code on train and
    validation, the codes' hash, config), log.csv, tensorboard/ and checkpoints/.
    """
    config.level(level)
    codes = read_manifest(codes_dir, "encode")
    check_codes_fit(codes, config, level)
    if codes["splits"].get("train", 0) < config.prior_batch_size:
        raise ValueError(
            f"{codes_dir} has {codes['splits'].get('train', 0)} training code grids, fewer than "
            f"prior_batch_size={config.prior_batch_size}; lower --set prior_batch_size"
        )
    done = _finished(Path(out_dir), "train-prior", config, {"codes": codes}, "prior.keras", level)
    if done is not None:
        return done
    rt = _prepare_runtime(config)
    import tensorflow as tf  # the code reader is tf.data

    from hvq_utils.data import code_dataset
    from hvq_utils.prior import build_prior, compile_prior

    needed = prior_inputs(level)

    @tf.autograph.experimental.do_not_convert  # plain dict plumbing; nothing to convert
    def to_xy(d):
        x = {"codes": d[level], **{lv: d[lv] for lv in needed[:-1]}}
        return x, d[level]

    bs = config.prior_batch_size
    train_ds = code_dataset(codes_dir, "train", bs, training=True, levels=needed).map(to_xy)
    val_ds = None
    if codes["splits"].get("validation", 0):
        val_ds = code_dataset(codes_dir, "validation", bs, training=False, levels=needed).map(to_xy)
    codebooks = None
    if config.prior_embedding == "codebook":
        codebooks = load_codebooks(codes_dir)

    def build():
        with rt.scope():
            return compile_prior(build_prior(config, level, codebooks=codebooks), config)

    out = Path(out_dir)
    model, logs = fit_resumable(
        build, train_ds, val_ds, out, config.prior_steps, config.checkpoint_every, config, {"codes": codes}
    )
    val_scores = model.evaluate(val_ds, verbose=0, return_dict=True) if val_ds is not None else {}
    _final_save(model, out, "prior.keras")
    bits = {
        "train": float(logs["bits_per_code"]) if "bits_per_code" in logs else None,
        "val": float(val_scores["bits_per_code"]) if val_scores else None,
    }
    manifest = write_manifest(
        out,
        "train-prior",
        config.to_dict(),
        {"codes": codes},
        level=level,
        steps=int(model.optimizer.iterations),
        metrics={"bits_per_code": bits},
        files=["prior.keras"],
        vqvae=codes["inputs"].get("vqvae"),
        grid_size=config.grid_sizes[config.level(level)],
        codebook_size=config.codebook_sizes[config.level(level)],
    )
    shown = ", ".join(f"{k} {v:.3f}" for k, v in bits.items() if v is not None)
    print(f"{level} prior: {manifest['steps']} steps; bits per code: {shown}")
    return manifest


def load_codebooks(codes_dir: str | os.PathLike) -> dict:
    """{level: float32 (K, D)} codebook vectors that `encode` stored beside the codes."""
    import numpy as np

    path = Path(codes_dir) / "codebooks.npz"
    if not path.is_file():
        raise ManifestError(f"{path} is missing; re-run `encode` to store the VQ-VAE's codebooks")
    with np.load(path) as f:
        return {lv: f[lv].astype("float32") for lv in LEVELS}
