"""The VQ-VAE: shapes, ablation, training through `fit`, saving, mixed precision, JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from hvq_utils import LEVELS, get_preset
from hvq_utils.vqvae import VQVAE, build_vqvae, compile_vqvae

SMOKE = get_preset("smoke")
# XLA's CPU optimisation passes take most of a JAX test's time and buy nothing for 32-pixel
# images; without them a step compiles in seconds.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)


# Training tests leave CBAM out: it doubles the time to trace a step, and the JAX test trains it.
LEAN = SMOKE.replace(cbam=False)
# What fit and evaluate log.
NAMES = {"loss", "mse", "psnr"} | {f"{lv}_{m}" for lv in LEVELS for m in ("perplexity", "usage")}


@pytest.fixture(scope="module")
def trained(images):
    """A smoke VQ-VAE fitted for 8 steps on one fixed batch of images (no labels); its history."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    vq = compile_vqvae(build_vqvae(LEAN), LEAN)
    batches = tf.data.Dataset.from_tensors(images).repeat()
    history = vq.fit(batches, epochs=8, steps_per_epoch=1, shuffle=False, verbose=0).history
    return vq, history


def test_encode_decode_shapes_and_dtypes(images):
    vq = build_vqvae(SMOKE)
    codes = vq.encode(images)
    assert set(codes) == set(LEVELS)
    for level, grid, k in zip(LEVELS, SMOKE.grid_sizes, SMOKE.codebook_sizes, strict=True):
        c = _np(codes[level])
        assert c.shape == (4, grid, grid) and c.dtype == np.int32, level
        assert 0 <= c.min() and c.max() < k
    out = _np(vq.decode(codes))
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(_np(vq(images)["images"]), out, atol=1e-6)
    for level, book in vq.codebooks().items():
        assert _np(book).shape == (SMOKE.codebook_sizes[SMOKE.level(level)], SMOKE.latent_dim)


def test_compiled_code_model_gives_the_codes_of_encode(trained, images):
    vq, _ = trained
    weights = len(vq.weights)
    compiled = vq.code_model().predict_on_batch(images)  # what stage 03 runs
    for level, codes in vq.encode(images).items():
        np.testing.assert_array_equal(np.asarray(compiled[level]), _np(codes))
    assert vq.code_model() is vq.code_model() and len(vq.weights) == weights  # shares, adds none


def test_full_preset_has_16_32_64_grids():
    config = get_preset("full")
    vq = build_vqvae(config)
    codes = vq.encode(np.full((1, 512, 512, 3), 0.5, np.float32))
    assert {lv: tuple(_np(c).shape) for lv, c in codes.items()} == {
        "top": (1, 16, 16), "middle": (1, 32, 32), "bottom": (1, 64, 64),
    }
    for q, k in zip(vq.quantizers, (512, 256, 64), strict=True):
        assert (q.num_codes, q.dim) == (k, 64)


def test_shared_encoder_is_lighter_and_gives_the_same_grids(images):
    separate = build_vqvae(SMOKE)
    shared = build_vqvae(SMOKE.replace(encoder="shared"))
    assert shared.count_params() < separate.count_params()
    assert {lv: _np(c).shape for lv, c in shared.encode(images).items()} == {
        lv: _np(c).shape for lv, c in separate.encode(images).items()
    }


def test_wrong_image_size_is_refused_with_the_expected_size():
    with pytest.raises(ValueError, match=r"takes \(B, 32, 32, 3\) \(image_size=32\)"):
        build_vqvae(SMOKE).encode(np.zeros((1, 64, 64, 3), np.float32))


def test_reconstruct_decodes_all_levels_or_ablates_the_others(trained, images):
    vq, _ = trained
    full = _np(vq.reconstruct(images))
    np.testing.assert_allclose(full, _np(vq.decode(vq.encode(images))), atol=1e-6)
    for levels in (("top",), ("top", "middle"), ("bottom",)):
        part = _np(vq.reconstruct(images, levels=levels))
        assert part.shape == full.shape and part.dtype == np.float32
        assert 0.0 <= part.min() and part.max() <= 1.0
        assert not np.allclose(part, full), levels
    with pytest.raises(ValueError, match="unknown 'coarse'"):
        vq.reconstruct(images, levels=("coarse",))


def test_fit_lowers_the_loss_and_logs_every_metric(trained, images):
    vq, history = trained
    assert NAMES <= set(history)
    assert history["loss"][-1] < history["loss"][0]
    assert history["psnr"][-1] > history["psnr"][0]
    for lv, k in zip(LEVELS, LEAN.codebook_sizes, strict=True):
        assert 1.0 <= history[f"{lv}_perplexity"][-1] <= k
        assert 0.0 < history[f"{lv}_usage"][-1] <= 1.0
    scores = vq.evaluate(images, batch_size=4, verbose=0, return_dict=True)
    assert NAMES <= set(scores)
    for q in vq.quantizers:  # the codebook state was updated inside the compiled steps
        assert float(_np(q.initialized)) == 1.0 and _np(q.ema_steps).max() > 0


def test_evaluate_reports_mse_and_psnr_per_image_with_a_short_last_batch(trained, images):
    vq, _ = trained
    errors = ((images - _np(vq(images)["images"])) ** 2).mean(axis=(1, 2, 3))  # (4,) per image
    scores = vq.evaluate(images[:3], batch_size=2, verbose=0, return_dict=True)  # batches 2 + 1
    np.testing.assert_allclose(scores["mse"], errors[:3].mean(), rtol=1e-4)
    np.testing.assert_allclose(scores["psnr"], (-10 * np.log10(errors[:3])).mean(), rtol=1e-4)


def test_saved_model_loads_with_the_same_codes_and_optimizer_and_keeps_training(
    trained, images, tmp_path
):
    vq, _ = trained
    path = tmp_path / "vqvae.keras"
    vq.save(path)
    loaded = keras.models.load_model(path)  # safe mode
    assert isinstance(loaded, VQVAE) and loaded.config.section("vqvae") == LEAN.section("vqvae")
    assert loaded.config.image_size == LEAN.image_size
    for level, codes in vq.encode(images).items():
        np.testing.assert_array_equal(_np(loaded.encode(images)[level]), _np(codes))
    assert int(loaded.optimizer.iterations) == int(vq.optimizer.iterations) == 8
    assert loaded.optimizer.get_config() == vq.optimizer.get_config()
    for a, b in zip(vq.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b))
    loaded.fit(images, batch_size=4, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 9


def test_trains_under_mixed_bfloat16(images):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        vq = compile_vqvae(build_vqvae(LEAN), LEAN)
        history = vq.fit(images, batch_size=4, epochs=2, verbose=0).history
        out = vq(images)["images"]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history["loss"]).all()
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert all(q.codebook.dtype == "float32" for q in vq.quantizers)


JAX_STEP = """
    import json, sys
    class NoTensorFlow:  # JAX-only machines (Colab's TPU runtime) have no TensorFlow
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError("tensorflow is blocked in this test")
    sys.meta_path.insert(0, NoTensorFlow())
    import keras, numpy as np
    from hvq_utils import get_preset
    from hvq_utils.vqvae import build_vqvae, compile_vqvae
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    out = {}
    for update in ("grad", "ema"):
        config = get_preset("smoke", codebook_update=update, cbam=update == "ema")
        vq = compile_vqvae(build_vqvae(config), config)
        before = [np.array(q.vectors()) for q in vq.quantizers]
        history = vq.fit(images, batch_size=4, epochs=2, verbose=0).history
        out[update] = {
            "history": {k: [float(v) for v in vs] for k, vs in history.items()},
            "initialized": [float(q.initialized) for q in vq.quantizers],
            "moved": [bool(np.abs(np.array(q.vectors()) - b).max() > 0)
                      for q, b in zip(vq.quantizers, before)],
        }
    out["evaluate"] = sorted(vq.evaluate(images, batch_size=4, verbose=0, return_dict=True))
    vq.save(sys.argv[1])
    loaded = keras.models.load_model(sys.argv[1])
    out["same_state"] = all(
        np.array_equal(np.array(a), np.array(b)) for a, b in zip(vq.weights, loaded.weights))
    out["iterations"] = int(loaded.optimizer.iterations)
    out["tensorflow"] = "tensorflow" in sys.modules
    print(json.dumps(out))
"""


def test_training_step_under_jax_without_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": FAST_XLA, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JAX_STEP), str(tmp_path / "vq.keras")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert NAMES <= set(out["evaluate"])
    for update in ("ema", "grad"):
        assert NAMES <= set(out[update]["history"]), update
        assert np.isfinite(out[update]["history"]["loss"]).all(), update
        # State assigned inside the jitted step (EMA, offsets, flags) reached the variables.
        assert out[update]["initialized"] == [1.0, 1.0, 1.0], update
        assert all(out[update]["moved"]), update
    assert out["same_state"] and out["iterations"] == 2
    assert out["tensorflow"] is False


def test_level_dropout_replaces_whole_images_lower_levels_by_their_mean_only_in_training():
    vq = build_vqvae(LEAN.replace(level_dropout=0.5))
    rng = np.random.default_rng(1)
    latents = [
        ops.convert_to_tensor(rng.normal(size=(64, g, g, LEAN.latent_dim)).astype("float32"))
        for g in LEAN.grid_sizes
    ]
    assert all(a is b for a, b in zip(vq._drop_levels(latents, False), latents, strict=True))
    out = [_np(x) for x in vq._drop_levels(latents, True)]
    np.testing.assert_array_equal(out[0], _np(latents[0]))  # the top level is never dropped
    for level, q, before in zip(LEVELS[1:], vq.quantizers[1:], out[1:], strict=False):
        mean = _np(q.mean_vector())
        dropped = np.all(np.isclose(before, mean, atol=1e-6), axis=(1, 2, 3))  # (B,) whole images
        kept = np.all(before == _np(latents[LEVELS.index(level)]), axis=(1, 2, 3))
        assert np.all(dropped ^ kept), level
        assert 16 < dropped.sum() < 48, (level, dropped.sum())  # about half of 64
    with pytest.raises(ValueError, match=r"level_dropout=1.0 must be in \[0, 1\)"):
        get_preset("smoke", level_dropout=1.0)


def test_coarse_decodes_see_only_the_levels_above_and_add_their_loss_in_training(images):
    vq = build_vqvae(LEAN)
    g = LEAN.grid_sizes
    rng = np.random.default_rng(1)
    latents = [rng.normal(size=(4, s, s, LEAN.latent_dim)).astype("float32") for s in g]
    recon, coarse = vq._decode_latents(latents, coarse=True)
    np.testing.assert_allclose(_np(recon), _np(vq._decode_latents(latents)), atol=1e-6)
    # Smoke: 32 pixels, grids 4/8/16: the top alone at 4x its grid, top + middle at 8x its grid.
    assert [tuple(c.shape) for c in coarse] == [(4, 16, 16, 3), (4, 32, 32, 3)]
    # Changing the bottom changes neither coarse decode; changing the middle only the second.
    other = [latents[0], latents[1], rng.normal(size=latents[2].shape).astype("float32")]
    _, coarse_b = vq._decode_latents(other, coarse=True)
    for a, b in zip(coarse, coarse_b, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b))
    other[1] = rng.normal(size=latents[1].shape).astype("float32")
    _, coarse_m = vq._decode_latents(other, coarse=True)
    np.testing.assert_array_equal(_np(coarse[0]), _np(coarse_m[0]))
    assert not np.allclose(_np(coarse[1]), _np(coarse_m[1]))

    # Training adds the weighted coarse MSEs to the latent loss; inference does not.
    off = build_vqvae(LEAN.replace(coarse_loss=(0.0, 0.0)))
    off.set_weights(vq.get_weights())
    x = ops.convert_to_tensor(images)
    with_coarse = _np(vq(x, training=True)["latent_loss"])
    without = _np(off(x, training=True)["latent_loss"])
    outputs = vq._quantize(x)
    _, coarse_x = vq._decode_latents([o["quantized"] for o in outputs], coarse=True)
    expected = _np(vq._coarse_losses(x, coarse_x))
    pooled = [ops.average_pool(x, p, p) for p in (2, 1)]  # to 16x16 and 32x32
    mses = [_np(ops.mean((t - c) ** 2, axis=(1, 2, 3))) for t, c in zip(pooled, coarse_x, strict=True)]
    np.testing.assert_allclose(expected, 0.3 * mses[0] + 1.0 * mses[1], rtol=1e-5)
    assert np.all(expected > 0)
    # (training also moves the EMA codebooks, which shifts the commitment term a little)
    np.testing.assert_allclose(with_coarse - without, expected, rtol=1e-2)
    np.testing.assert_allclose(_np(vq(x)["latent_loss"]), _np(off(x)["latent_loss"]), rtol=1e-6)
    for bad in ("0", "0.3,-1"):
        with pytest.raises(ValueError, match=r"coarse_loss=.* needs 2 weights >= 0"):
            get_preset("smoke", coarse_loss=bad)


@pytest.fixture(scope="module")
def ablation_losses(tmp_path_factory):
    """PSNR (dB) lost on held-out photographs when each level alone is ablated, after 300
    smoke-scale training steps on crops of the sample photographs (32x32)."""
    import tensorflow as tf
    from PIL import Image

    from hvq_utils.data.sample import make_sample_folder
    from hvq_utils.vqvae import psnr_db

    folder = make_sample_folder(tmp_path_factory.mktemp("photos") / "crops", count=240, max_side=64)
    images = np.stack([
        np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), np.float32) / 255
        for p in sorted(folder.glob("*.jpg"))
    ])
    train, held_out = images[:200], images[200:]
    keras.utils.set_random_seed(0)
    vq = compile_vqvae(build_vqvae(SMOKE), SMOKE)
    batches = tf.data.Dataset.from_tensor_slices(train).shuffle(200, seed=0).repeat().batch(16)
    vq.fit(batches, epochs=1, steps_per_epoch=300, shuffle=False, verbose=0)

    def psnr(levels):
        recon = _np(vq.reconstruct(held_out, levels=levels))
        return float(np.mean(_np(psnr_db(np.mean((recon - held_out) ** 2, axis=(1, 2, 3))))))

    full = psnr(LEVELS)
    return {lv: full - psnr(tuple(x for x in LEVELS if x != lv)) for lv in LEVELS}


@pytest.mark.parametrize("level", LEVELS)
def test_no_level_collapses_into_carrying_nothing(ablation_losses, level):
    # A collapsed level costs 0.00-0.05 dB when ablated: the top did here (0.02 dB) before the
    # coarse losses; the quality aim of 1 dB per level is bench/quality.py's to report.
    lost = ablation_losses[level]
    assert lost >= 0.25, f"ablating the {level} level costs only {lost:.2f} dB: it carries nothing"
