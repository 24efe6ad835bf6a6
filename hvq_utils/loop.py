"""The resumable training loop that both training stages (train_vqvae.py, train_prior.py) run.

    model, logs = fit_resumable(build, make_train_ds, val_ds, out_dir, steps, every, scope)

Training state that must survive a kill (the model, its optimizer state and step) is saved
together as `checkpoints/step-NNNNNNN.keras` every `checkpoint_every` steps, written to a
temporary name and renamed into place (Keras' BackupAndRestore overwrites in place and does
not survive a kill). The same call resumes from the newest checkpoint, also from a
read-only earlier output (`resume_from`), and ends at exactly `steps`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from hvq_utils.manifest import atomic_output

CHECKPOINTS = "checkpoints"
log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in out_dir/checkpoints, oldest first."""
    found = []
    for p in (Path(out_dir) / CHECKPOINTS).glob("step-*.keras"):
        try:
            found.append((int(p.stem.split("-")[1]), p))
        except ValueError:
            continue
    return sorted(found)


def save_model(model, path: str | os.PathLike) -> Path:
    """model.save(path) through a temporary file renamed into place: a kill leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        model.save(tmp)
    return path


def _save_checkpoint(model, out_dir: Path, step: int, keep: int = 2) -> Path:
    final = save_model(model, out_dir / CHECKPOINTS / f"step-{step:07d}.keras")
    for _, old in checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def current_step(model) -> int:
    """The optimizer's step count (a MirroredVariable under tf.distribute, which int() refuses)."""
    import keras

    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def keras_verbosity() -> int:
    """Keras' fit verbosity: a progress bar on a terminal, one line per epoch anywhere else
    (a file, a notebook's saved log), where the bar's control codes would flood the log."""
    return 1 if sys.stdout.isatty() else 2


def _nan_stop():
    """keras.callbacks.TerminateOnNaN raising at the bad batch, where this Keras has raise_error."""
    import inspect

    import keras

    if "raise_error" in inspect.signature(keras.callbacks.TerminateOnNaN).parameters:
        return keras.callbacks.TerminateOnNaN(raise_error=True)
    return keras.callbacks.TerminateOnNaN()


def _callbacks(out_dir: Path, total: int, every: int, state: dict) -> list:
    import keras

    class Guard(keras.callbacks.Callback):
        """Stops at exactly `total` steps and checkpoints each epoch (= `every` steps)."""

        def on_train_batch_end(self, batch, logs=None):
            step = current_step(self.model)
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state["bad_step"] = step
                self.model.stop_training = True
            elif step >= total:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if "bad_step" in state:
                return
            step = current_step(self.model)
            if logs is not None:
                logs["step"] = step  # log.csv's x axis: epochs restart their count on resume
            state["logs"] = dict(logs or {})
            _save_checkpoint(self.model, out_dir, step)
            state["step"] = step

    # Guard first: it records a bad step before TerminateOnNaN raises.
    callbacks = [Guard(), _nan_stop(), keras.callbacks.CSVLogger(str(out_dir / "log.csv"), append=True)]
    try:
        import tensorboard  # noqa: F401  (Keras' TensorBoard writer needs it and TensorFlow)
        import tensorflow  # noqa: F401

        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), update_freq=every))
    except ImportError:
        log.info("TensorBoard logs skipped: TensorFlow or TensorBoard is missing (log.csv has the curves)")
    return callbacks


def _latest(
    out_dir: Path, resume_from: str | os.PathLike | None, final: str | None = None
) -> tuple[int, Path] | None:
    """The newest checkpoint in out_dir, else in resume_from (an earlier, maybe read-only output),
    else resume_from's finished model `final` (a published dataset holds no checkpoints, but the
    final model keeps its optimizer state), at the step its manifest records."""
    for where in (out_dir, resume_from):
        if where is not None and (found := checkpoints(where)):
            return found[-1]
    if resume_from is not None and final is not None and (Path(resume_from) / final).is_file():
        try:
            step = int(json.loads((Path(resume_from) / "manifest.json").read_text())["steps"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return step, Path(resume_from) / final
    return None


def fit_resumable(
    build: Callable[[], object],
    make_train_ds: Callable[[int], object],
    val_ds,
    out_dir: str | os.PathLike,
    steps: int,
    checkpoint_every: int,
    scope: Callable[[], object],
    resume_from: str | os.PathLike | None = None,
    verbose: int | None = None,
    final: str | None = None,
):
    """Train `build()` (a compiled Keras model) to exactly `steps`, resuming if checkpoints exist.

    make_train_ds(step): an endless dataset for a run that starts at `step` (its shuffle seed
    should fold the step in, so a resumed run does not replay the first batches); val_ds: a
    finite dataset or None, evaluated at every checkpoint; scope: the distribution strategy's
    scope (`Runtime.scope`), in which the model is built or loaded. Returns (model, logs of
    the last checkpoint). final: the file name of the finished model, from which a
    `resume_from` without checkpoints resumes. Raises NonFiniteLossError if the loss stops
    being finite; the last good checkpoint stays.
    """
    from hvq_utils.loading import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = _latest(out_dir, resume_from, final)
    with scope():
        if latest is not None:
            done, path = latest
            model = load_model(path)
            log.info("resuming from %s (step %d of %d)", path, done, steps)
        else:
            done, model = 0, build()
    if done > steps:
        raise ValueError(
            f"{out_dir} is already at step {done}, past steps={steps}; raise the steps or use a new --out"
        )
    state: dict = {"step": done, "logs": {}}
    if done < steps:
        try:
            model.fit(
                make_train_ds(done),
                epochs=math.ceil(steps / checkpoint_every),
                initial_epoch=done // checkpoint_every,
                steps_per_epoch=checkpoint_every,
                validation_data=val_ds,
                shuffle=False,  # the reader shuffles; Keras would only warn that it cannot
                callbacks=_callbacks(out_dir, steps, checkpoint_every, state),
                verbose=keras_verbosity() if verbose is None else verbose,
            )
        except RuntimeError:
            if "bad_step" not in state:
                raise
    if "bad_step" in state:
        last = checkpoints(out_dir)
        kept = f"the checkpoint at step {last[-1][0]} is kept" if last else "no checkpoint was made yet"
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {state['bad_step']}; training stopped and "
            f"{kept}; try a lower learning rate (--set learning_rate=...) or mixed_precision=off"
        )
    return model, state["logs"]

