"""The resumable loop on a tiny model: exact step counts, resume (also from a read-only earlier
output), a resumed run's fresh data order, and the non-finite loss stop."""

import csv
import os
import shutil
import stat

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from contextlib import nullcontext  # noqa: E402

from hvq_utils.loop import NonFiniteLossError, checkpoints, fit_resumable, keras_verbosity  # noqa: E402


def _build():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _data(bad_after: int | None = None, seen: list | None = None):
    def make(step: int):
        if seen is not None:
            seen.append(step)
        x = np.random.default_rng(step).normal(size=(8, 3)).astype("float32")
        good = tf.data.Dataset.from_tensors((x, x.sum(1, keepdims=True)))
        if bad_after is None:
            return good.repeat()
        bad = tf.data.Dataset.from_tensors((x * np.inf, x.sum(1, keepdims=True)))
        return good.repeat(bad_after).concatenate(bad.repeat())

    return make


def _fit(out, steps, every=2, data=None, **kw):
    return fit_resumable(_build, data or _data(), None, out, steps, every, nullcontext, verbose=0, **kw)


def test_training_stops_at_exactly_steps_and_resumes_to_a_later_target(tmp_path):
    seen: list = []
    model, _ = _fit(tmp_path, 5, data=_data(seen=seen))
    assert int(model.optimizer.iterations) == 5
    assert [s for s, _ in checkpoints(tmp_path)] == [4, 5]
    model, _ = _fit(tmp_path, 9, data=_data(seen=seen))
    assert int(model.optimizer.iterations) == 9
    assert [s for s, _ in checkpoints(tmp_path)] == [7, 9]  # every 2 steps from the resume point
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 5, 7, 9]
    assert seen == [0, 5]  # the resumed run's reader was made for step 5, not replayed from 0


def test_a_finished_run_is_not_trained_again(tmp_path):
    _fit(tmp_path, 2)
    before = checkpoints(tmp_path)[-1][1].stat().st_mtime_ns
    model, _ = _fit(tmp_path, 2)
    assert int(model.optimizer.iterations) == 2
    assert checkpoints(tmp_path)[-1][1].stat().st_mtime_ns == before


def test_fewer_steps_than_done_is_refused(tmp_path):
    _fit(tmp_path, 4)
    with pytest.raises(ValueError, match="already at step 4, past steps=2"):
        _fit(tmp_path, 2)


def test_resumes_from_a_read_only_earlier_output_into_a_new_one(tmp_path):
    earlier, new = tmp_path / "earlier", tmp_path / "new"
    _fit(earlier, 3)
    for path in [earlier, *earlier.rglob("*")]:  # an attached Kaggle input is read-only
        os.chmod(path, stat.S_IREAD | stat.S_IEXEC if path.is_dir() else stat.S_IREAD)
    try:
        model, _ = _fit(new, 6, resume_from=earlier)
    finally:
        for path in [earlier, *earlier.rglob("*")]:
            os.chmod(path, stat.S_IRWXU)
    assert int(model.optimizer.iterations) == 6
    assert [s for s, _ in checkpoints(new)] == [5, 6]  # 4 is not a checkpoint step from 3 on: 5, 6
    assert [s for s, _ in checkpoints(earlier)] == [2, 3]
    shutil.rmtree(earlier)


def test_resumes_from_a_published_output_that_holds_only_the_final_model(tmp_path):
    # artifacts.publish leaves checkpoints/ out; the final model keeps the optimizer state.
    earlier, new = tmp_path / "earlier", tmp_path / "new"
    model, _ = _fit(earlier, 3)
    model.save(earlier / "final.keras")
    (earlier / "manifest.json").write_text('{"steps": 3}')
    shutil.rmtree(earlier / "checkpoints")
    seen: list = []
    resumed, _ = _fit(new, 5, data=_data(seen=seen), resume_from=earlier, final="final.keras")
    assert int(resumed.optimizer.iterations) == 5
    assert seen == [3]  # went on from step 3, not from scratch
    assert [s for s, _ in checkpoints(new)] == [5]


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"at step 3; .*checkpoint at step 2 is kept.*learning"):
        _fit(tmp_path, 6, data=_data(bad_after=2))
    assert [s for s, _ in checkpoints(tmp_path)] == [2]
    restored = keras.models.load_model(checkpoints(tmp_path)[-1][1])
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_progress_is_one_line_per_epoch_when_not_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert keras_verbosity() == 2
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert keras_verbosity() == 1
