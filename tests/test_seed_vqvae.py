"""The seed implementation's VQ-VAE (arch="seed"): shapes, BatchNorm modes, fit, ablation,
saving, its parameter count at the full size, JAX."""

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
from hvq_utils.loading import load_model
from hvq_utils.vqvae import VQVAE, compile_vqvae
from hvq_utils.vqvae.seed import SeedResBlock, SeedVQVAE

# The seed trains its codebooks by gradient, without restarts.
SMOKE = get_preset("smoke", arch="seed", codebook_update="grad", restart_after=0)
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
NAMES = {"loss", "mse", "psnr"} | {f"{lv}_{m}" for lv in LEVELS for m in ("perplexity", "usage")}
STEPS = 4


def _np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _build(config) -> SeedVQVAE:
    vq = SeedVQVAE(config)
    vq.build((1, config.image_size, config.image_size, 3))
    return vq


def _norms(vq) -> list:
    """Every BatchNormalization layer of the model."""
    return [layer for layer in vq._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def trained(images):
    """A smoke seed VQ-VAE fitted for STEPS steps on one fixed batch; its history."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    vq = compile_vqvae(_build(SMOKE), SMOKE)
    batches = tf.data.Dataset.from_tensors(images).repeat()
    history = vq.fit(batches, epochs=STEPS, steps_per_epoch=1, shuffle=False, verbose=0).history
    return vq, history


def test_encode_decode_shapes_dtypes_and_inference_mode(images):
    vq = _build(SMOKE)
    assert isinstance(vq, VQVAE)
    codes = vq.encode(images)
    assert set(codes) == set(LEVELS)
    for level, grid, k in zip(LEVELS, SMOKE.grid_sizes, SMOKE.codebook_sizes, strict=True):
        c = _np(codes[level])
        assert c.shape == (4, grid, grid) and c.dtype == np.int32, level
        assert 0 <= c.min() and c.max() < k
    out = _np(vq.decode(codes))
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # call without training, decode and the compiled code model all run BatchNorm in inference.
    np.testing.assert_allclose(_np(vq(images)["images"]), out, atol=1e-6)
    for level, compiled in vq.code_model().predict_on_batch(images).items():
        np.testing.assert_array_equal(np.asarray(compiled), _np(codes[level]))
    for level, book in vq.codebooks().items():
        assert _np(book).shape == (SMOKE.codebook_sizes[SMOKE.level(level)], SMOKE.latent_dim)


def test_training_flag_reaches_the_decoder_batchnorm(images):
    vq = _build(SMOKE)
    outputs = vq._quantize(images)
    latents = [o["quantized"] for o in outputs]
    # Batch statistics differ from the fresh moving ones (mean 0, variance 1).
    assert not np.allclose(
        _np(vq._decode_latents(latents, training=True)), _np(vq._decode_latents(latents)), atol=1e-3
    )
    assert not np.allclose(_np(vq(images, training=True)["images"]), _np(vq(images)["images"]), atol=1e-3)


def test_fit_trains_and_updates_every_batchnorm(trained, images):
    vq, history = trained
    assert NAMES <= set(history)
    assert np.isfinite(history["loss"]).all() and len(history["loss"]) == STEPS
    norms = _norms(vq)
    # Encoders: 3 + 2 + 1 residual blocks, 2 after the concatenations, 2 + 3 blocks after them;
    # decoder: 3 + 2 + 1 upsamplings and the trunk's: 20 at the smoke preset's (3, 2, 1) strides.
    assert len(norms) == 20
    for norm in norms:  # fit ran them with training=True: the moving statistics moved
        assert np.abs(_np(norm.moving_mean)).max() > 0, norm.path
        assert np.abs(_np(norm.moving_variance) - 1.0).max() > 0, norm.path
    for q in vq.quantizers:
        assert float(_np(q.initialized)) == 1.0 and q.codebook.trainable
    scores = vq.evaluate(images, batch_size=4, verbose=0, return_dict=True)
    assert NAMES <= set(scores) and np.isfinite(scores["loss"])


def test_reconstruct_decodes_all_levels_or_ablates_the_others(trained, images):
    vq, _ = trained
    full = _np(vq.reconstruct(images))
    np.testing.assert_allclose(full, _np(vq.decode(vq.encode(images))), atol=1e-6)
    for levels in (("top",), ("top", "middle"), ("bottom",), ()):
        part = _np(vq.reconstruct(images, levels=levels))
        assert part.shape == full.shape and part.dtype == np.float32
        assert 0.0 <= part.min() and part.max() <= 1.0
        assert not np.allclose(part, full), levels
    with pytest.raises(ValueError, match="unknown 'coarse'"):
        vq.reconstruct(images, levels=("coarse",))


def test_saved_model_loads_with_identical_outputs_and_optimizer(trained, images, tmp_path):
    vq, _ = trained
    path = tmp_path / "seed.keras"
    vq.save(path)
    loaded = load_model(path)
    assert type(loaded) is SeedVQVAE
    assert loaded.config.section("vqvae") == SMOKE.section("vqvae")
    for a, b in zip(vq.weights, loaded.weights, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(_np(a), _np(b))
    np.testing.assert_array_equal(_np(loaded(images)["images"]), _np(vq(images)["images"]))
    for level, codes in vq.encode(images).items():
        np.testing.assert_array_equal(_np(loaded.encode(images)[level]), _np(codes))
    assert int(loaded.optimizer.iterations) == STEPS
    for a, b in zip(vq.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b))


def test_has_every_attribute_of_vqvae_but_its_layer_stacks():
    # SeedVQVAE.__init__ skips VQVAE.__init__; whatever state VQVAE's methods use must be here.
    hvq_only = {"stems", "encoder_blocks", "pre_quantizers"}
    base = set(vars(VQVAE(get_preset("smoke"))))
    missing = base - hvq_only - set(vars(SeedVQVAE(SMOKE)))
    assert not missing, f"SeedVQVAE lacks VQVAE's {sorted(missing)}"


def test_shared_encoder_is_refused():
    with pytest.raises(ValueError, match="encoder='shared' is not available with arch='seed'"):
        SeedVQVAE(SMOKE.replace(encoder="shared"))


def test_residual_block_projects_its_skip_only_when_widths_differ():
    x = np.random.default_rng(1).random((2, 8, 8, 6), dtype=np.float32)
    same, wider = SeedResBlock(6, cbam=False), SeedResBlock(10, cbam=False)
    assert tuple(same(x).shape) == (2, 8, 8, 6) and tuple(wider(x).shape) == (2, 8, 8, 10)
    # Zero the branch's last convolution: the block is BatchNorm(skip), in inference mode
    # x / sqrt(1 + eps), with skip x (same width) or elu(conv_in(x)) (projection).
    for block in (same, wider):
        block.conv_out.kernel.assign(np.zeros(block.conv_out.kernel.shape, np.float32))
    scale = 1.0 / np.sqrt(1.0 + 1e-3)
    np.testing.assert_allclose(_np(same(x)), x * scale, rtol=1e-5)
    h = _np(ops.elu(wider.conv_in(x), 0.1))
    np.testing.assert_allclose(_np(wider(x)), h * scale, rtol=1e-5, atol=1e-6)


def _seed_parameters_by_hand() -> dict:
    """The `seed` preset's parameters, counted from the architecture (module docstring)."""

    def conv(k, cin, cout):  # k x k kernel and bias
        return k * k * cin * cout + cout

    def norm(c):  # gamma, beta, moving mean, moving variance
        return 4 * c

    def cbam(c):  # MLP c -> c/4 -> c with biases; spatial 5x5 over (mean, max) to c gates
        return (c * (c // 4) + c // 4) + (c // 4 * c + c) + conv(5, 2, c)

    def res(cin, w):  # 1x1 to w, 3x3 to w/2, CBAM(w/2), 1x1 to w, BatchNorm(w)
        return conv(1, cin, w) + conv(3, w, w // 2) + cbam(w // 2) + conv(1, w // 2, w) + norm(w)

    strides = (5, 4, 3)
    parts = {
        "image encoders": sum(
            conv(3, 3, 128) + res(128, 128) + (n - 1) * (conv(3, 128, 128) + res(128, 128))
            for n in strides
        ),
        # top -> middle: 1; top -> bottom: 2; middle -> bottom: 1 transposed 4x4 64 -> 64.
        "conditioners": 4 * (4 * 4 * 64 * 64 + 64),
        "middle head": norm(128 + 64) + res(192, 256) + res(256, 256) + conv(1, 256, 64),
        "bottom head": norm(128 + 64 + 64) + 3 * res(256, 256) + conv(1, 256, 64),
        "top head": conv(1, 128, 64),
        "decoder streams": (conv(1, 64, 256) + 2 * conv(1, 64, 128))
        + (4 * 4 * 256 * 128 + 128) + (5 + 4 + 3 - 1) * (4 * 4 * 128 * 128 + 128)
        + (5 + 4 + 3) * norm(128),
        "trunk": conv(1, 128, 256) + 2 * conv(1, 256, 256) + norm(256) + conv(1, 256, 3),
    }
    return parts


def test_seed_preset_parameter_count_is_the_hand_count_near_8_6m():
    config = get_preset("seed")
    assert config.arch == "seed" and config.image_size == 512
    vq = _build(config)
    layers_only = sum(_seed_parameters_by_hand().values())  # all but the quantizers
    assert layers_only == 8_546_339
    codebooks = sum(k * 64 for k in config.codebook_sizes)  # the seed's trainable codebooks
    # VectorQuantizer's bookkeeping besides the codebook: offset (K, 64); count, unused (K,);
    # initialized (). Not a parameter of the seed's model.
    bookkeeping = sum(k * 64 + 2 * k + 1 for k in config.codebook_sizes)
    assert vq.count_params() == layers_only + codebooks + bookkeeping
    # 8,599,587 with the preset's 64 bottom codes, 8,603,683 with the seed's 128: SEED.md's 8.6M.
    assert abs(layers_only + codebooks - 8.6e6) < 0.01e6
    # Trainable: all but the BatchNorm moving statistics (2 x 5,056 channels) and the bookkeeping.
    moving = 2 * sum(int(n.moving_mean.shape[0]) for n in _norms(vq))
    assert moving == 10_112
    trainable = sum(int(np.prod(w.shape)) for w in vq.trainable_weights)
    assert trainable == layers_only - moving + codebooks
    spec = vq.compute_output_spec(keras.KerasTensor((1, 512, 512, 3)))  # shapes only
    assert tuple(spec["images"].shape) == (1, 512, 512, 3)


JAX_STEP = """
    import json, sys
    class NoTensorFlow:  # JAX-only machines (Colab's TPU runtime) have no TensorFlow
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ImportError("tensorflow is blocked in this test")
    sys.meta_path.insert(0, NoTensorFlow())
    import keras, numpy as np
    from hvq_utils import get_preset
    from hvq_utils.loading import load_model
    from hvq_utils.vqvae import compile_vqvae
    from hvq_utils.vqvae.seed import SeedVQVAE
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    config = get_preset("smoke", arch="seed", codebook_update="grad", restart_after=0)
    vq = SeedVQVAE(config)
    vq.build((1, 32, 32, 3))
    compile_vqvae(vq, config)
    history = vq.fit(images, batch_size=4, epochs=2, verbose=0).history
    norms = [l for l in vq._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    out = {
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "norms_moved": [bool(np.abs(np.array(n.moving_mean)).max() > 0) for n in norms],
        "initialized": [float(q.initialized) for q in vq.quantizers],
        "shapes": {k: list(np.array(v).shape) for k, v in vq.encode(images).items()},
    }
    vq.save(sys.argv[1])
    loaded = load_model(sys.argv[1])
    out["same_state"] = all(
        np.array_equal(np.array(a), np.array(b)) for a, b in zip(vq.weights, loaded.weights))
    out["same_images"] = bool(np.array_equal(
        np.array(loaded(images)["images"]), np.array(vq(images)["images"])))
    out["type"] = type(loaded).__name__
    out["tensorflow"] = "tensorflow" in sys.modules
    print(json.dumps(out))
"""


def test_trains_saves_and_loads_under_jax_without_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": FAST_XLA, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JAX_STEP), str(tmp_path / "seed.keras")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert NAMES <= set(out["history"])
    assert np.isfinite(out["history"]["loss"]).all()
    assert len(out["norms_moved"]) == 20 and all(out["norms_moved"])
    assert out["initialized"] == [1.0, 1.0, 1.0]
    assert out["shapes"] == {"top": [4, 4, 4], "middle": [4, 8, 8], "bottom": [4, 16, 16]}
    assert out["same_state"] and out["same_images"] and out["type"] == "SeedVQVAE"
    assert out["tensorflow"] is False


def test_trains_under_mixed_bfloat16_with_level_dropout(images):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        # CBAM doubles the time to trace a step; level dropout runs through VQVAE.call.
        lean = SMOKE.replace(cbam=False, level_dropout=0.5)
        vq = compile_vqvae(_build(lean), lean)
        history = vq.fit(images, batch_size=4, epochs=1, verbose=0).history
        out = vq(images)["images"]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history["loss"]).all()
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert all(q.codebook.dtype == "float32" for q in vq.quantizers)
