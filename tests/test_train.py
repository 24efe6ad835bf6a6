"""The resumable loop on a tiny model: exact step counts, resume, refusal, non-finite loss."""

import csv

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from hvq_utils import get_preset  # noqa: E402
from hvq_utils.manifest import ManifestError  # noqa: E402
from hvq_utils.train import NonFiniteLossError, _checkpoints, fit_resumable  # noqa: E402

INPUTS = {"data": {"stage": "prepare", "hash": "a" * 64}}


def _build():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _data(bad_after: int | None = None):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    good = tf.data.Dataset.from_tensors((x, x.sum(1, keepdims=True)))
    if bad_after is None:
        return good.repeat()
    bad = tf.data.Dataset.from_tensors((x * np.inf, x.sum(1, keepdims=True)))
    return good.repeat(bad_after).concatenate(bad.repeat())


def test_training_stops_at_exactly_steps_and_resumes_to_a_later_target(tmp_path):
    cfg = get_preset("smoke")
    model, _ = fit_resumable(_build, _data(), None, tmp_path, 5, 2, cfg, INPUTS, verbose=0)
    assert int(model.optimizer.iterations) == 5
    assert [s for s, _ in _checkpoints(tmp_path)] == [4, 5]
    model, _ = fit_resumable(_build, _data(), None, tmp_path, 9, 2, cfg.replace(steps=9), INPUTS, verbose=0)
    assert int(model.optimizer.iterations) == 9
    assert [s for s, _ in _checkpoints(tmp_path)] == [7, 9]  # every 2 steps from the resume point
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 5, 7, 9]


def test_a_finished_run_is_not_trained_again(tmp_path):
    cfg = get_preset("smoke")
    fit_resumable(_build, _data(), None, tmp_path, 2, 2, cfg, INPUTS, verbose=0)
    before = _checkpoints(tmp_path)[-1][1].stat().st_mtime_ns
    model, _ = fit_resumable(_build, _data(), None, tmp_path, 2, 2, cfg, INPUTS, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert _checkpoints(tmp_path)[-1][1].stat().st_mtime_ns == before


def test_resuming_with_other_settings_or_inputs_is_refused(tmp_path):
    cfg = get_preset("smoke")
    fit_resumable(_build, _data(), None, tmp_path, 2, 2, cfg, INPUTS, verbose=0)
    with pytest.raises(ValueError, match="holds a run with latent_dim=8, not 16"):
        fit_resumable(_build, _data(), None, tmp_path, 4, 2, cfg.replace(latent_dim=16), INPUTS, verbose=0)
    other = {"data": {"stage": "prepare", "hash": "b" * 64, "_path": "elsewhere"}}
    with pytest.raises(ManifestError, match="trained on other data"):
        fit_resumable(_build, _data(), None, tmp_path, 4, 2, cfg, other, verbose=0)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = get_preset("smoke")
    with pytest.raises(NonFiniteLossError, match=r"at step 3; .*checkpoint at step 2 is kept.*learning"):
        fit_resumable(_build, _data(bad_after=2), None, tmp_path, 6, 2, cfg, INPUTS, verbose=0)
    assert [s for s, _ in _checkpoints(tmp_path)] == [2]
    restored = keras.models.load_model(_checkpoints(tmp_path)[-1][1])
    assert all(np.isfinite(w).all() for w in restored.get_weights())
