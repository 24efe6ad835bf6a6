"""The gated PixelCNN prior: causality, shapes, errors, learning, saving, both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from hvq_utils import LEVELS, get_preset
from hvq_utils.prior import MaskedConv2D, build_prior, compile_prior
from hvq_utils.prior.layers import horizontal_mask, raster_mask, vertical_mask

ROOT = Path(__file__).resolve().parents[1]
SMOKE = get_preset("smoke")


@pytest.fixture(autouse=True)
def _seeded():
    """Fixed weights for every test: a tiny random prior can have a dead ReLU somewhere."""
    keras.utils.set_random_seed(0)


def _codes(config, level: str, batch: int, rng) -> np.ndarray:
    """Random int32 (batch, g, g) codes of `level`."""
    i = config.level(level)
    g = config.grid_sizes[i]
    return rng.integers(0, config.codebook_sizes[i], (batch, g, g)).astype("int32")


def _inputs(config, level: str, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """The input dict `level`'s prior takes, filled with random codes."""
    rng = np.random.default_rng(seed)
    inputs = {"codes": _codes(config, level, batch, rng)}
    for upper in LEVELS[: config.level(level)]:
        inputs[upper] = _codes(config, upper, batch, rng)
    return inputs


def _logits(prior, inputs) -> np.ndarray:
    return keras.ops.convert_to_numpy(prior(inputs, training=False))


def _positions(side: int) -> list[tuple[int, int]]:
    """First, first-row end, first-column, a middle one and the last position."""
    return [(0, 0), (0, side - 1), (1, 0), (side // 2, side // 2 - 1), (side - 1, side - 1)]


def _random_codebooks(config, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        level: rng.normal(size=(k, config.latent_dim)).astype("float32")
        for level, k in zip(LEVELS, config.codebook_sizes, strict=True)
    }


def _assert_causal(prior, level: str, config) -> None:
    """Changing the code at p leaves logits at raster positions <= p bit-identical, and
    changes some later ones."""
    side = config.grid_sizes[config.level(level)]
    k = config.codebook_sizes[config.level(level)]
    positions = _positions(side)
    base = _inputs(config, level, batch=1)
    batch = {key: np.repeat(value, len(positions), axis=0) for key, value in base.items()}
    changed = {key: value.copy() for key, value in batch.items()}
    for b, (i, j) in enumerate(positions):
        changed["codes"][b, i, j] = (changed["codes"][b, i, j] + 1) % k
    before = _logits(prior, batch).reshape(len(positions), side * side, -1)  # raster order
    after = _logits(prior, changed).reshape(len(positions), side * side, -1)
    for b, (i, j) in enumerate(positions):
        p = i * side + j
        assert np.array_equal(before[b, : p + 1], after[b, : p + 1]), (level, (i, j))
        if p + 1 < side * side:
            assert not np.array_equal(before[b, p + 1 :], after[b, p + 1 :]), (level, (i, j))


def _embedding_gradient(prior, inputs, position) -> np.ndarray:
    """|d logits[position] / d x| summed over channels, (B, H, W), x the code embedding."""
    i, j = position
    x = prior.embedding(inputs["codes"])  # (B, H, W, C)
    cond = prior.condition(inputs)
    weights = np.random.default_rng(1).normal(size=(prior.num_codes,)).astype("float32")

    def target(x):
        logits = prior.logits_from_embedding(x, cond, training=False)  # (B, H, W, K)
        return keras.ops.sum(logits[:, i, j, :] * weights)

    if keras.backend.backend() == "jax":
        import jax

        grad = jax.grad(target)(x)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = target(x)
        grad = tape.gradient(y, x)
    return np.abs(keras.ops.convert_to_numpy(grad)).sum(axis=-1)


@pytest.mark.parametrize("level", LEVELS)
def test_logits_have_one_float32_score_per_code_at_every_position(level):
    prior = build_prior(SMOKE, level)
    i = SMOKE.level(level)
    g, k = SMOKE.grid_sizes[i], SMOKE.codebook_sizes[i]
    logits = prior(_inputs(SMOKE, level, batch=3), training=False)
    assert tuple(logits.shape) == (3, g, g, k)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert prior.required_inputs == ("codes", *LEVELS[:i])


def test_missing_or_misshapen_conditioning_input_is_named():
    prior = build_prior(SMOKE, "bottom")
    inputs = _inputs(SMOKE, "bottom")
    with pytest.raises(ValueError, match="'middle' is missing"):
        prior({k: v for k, v in inputs.items() if k != "middle"})
    with pytest.raises(ValueError, match=r"inputs\['top'\] has grid \(8, 8\)"):
        prior({**inputs, "top": inputs["middle"]})
    with pytest.raises(TypeError, match="takes a dict"):
        prior(inputs["codes"])


@pytest.mark.parametrize("level", LEVELS)
def test_changing_a_code_leaves_logits_at_and_before_it_unchanged(level):
    assert SMOKE.prior_attention and SMOKE.prior_dropout > 0  # attention on, dropout in the model
    _assert_causal(build_prior(SMOKE, level), level, SMOKE)


@pytest.mark.parametrize("level", LEVELS)
def test_logits_have_zero_gradient_at_and_after_their_position(level):
    prior = build_prior(SMOKE, level)
    side = SMOKE.grid_sizes[SMOKE.level(level)]
    position = (side // 2, side // 2)
    grad = _embedding_gradient(prior, _inputs(SMOKE, level, batch=1), position)[0]
    flat = grad.reshape(-1)  # raster order
    p = position[0] * side + position[1]
    assert np.all(flat[p:] == 0.0)
    assert np.any(flat[:p] > 0.0)


@pytest.mark.parametrize("level", ["middle", "bottom"])
def test_conditioning_codes_reach_the_first_position(level):
    prior = build_prior(SMOKE, level)
    inputs = _inputs(SMOKE, level, batch=1)
    base = _logits(prior, inputs)
    for upper in LEVELS[: SMOKE.level(level)]:
        k = SMOKE.codebook_sizes[SMOKE.level(upper)]
        other = {**inputs, upper: (inputs[upper] + 1) % k}
        # Position (0, 0) has no earlier codes: only the conditioning can move its logits.
        assert not np.array_equal(base[:, 0, 0], _logits(prior, other)[:, 0, 0]), upper


def _minkowski(a, b) -> set[tuple[int, int]]:
    return {(p + r, q + s) for p, q in a for r, s in b}


def test_receptive_offsets_predict_exactly_what_a_position_depends_on():
    """Without attention, composing every block's `causal_structure` gives the set of
    embedding positions the logits at p read; the gradient finds the same set."""
    config = SMOKE.replace(prior_attention=False, prior_dropout=0.0)
    prior = build_prior(config, "bottom")
    vertical = horizontal = {(0, 0)}  # offsets of x that each stack's input depends on
    reads = set()
    for block in prior.blocks:
        structure = block.causal_structure()
        assert structure["attention_channel"] is None and structure["attention_spatial"] is None
        v_pre = _minkowski(structure["vertical"], vertical)
        gate = _minkowski(structure["horizontal"], horizontal) | v_pre
        reads |= gate  # the skip reads the gate
        vertical = v_pre
        horizontal = gate | (horizontal if structure["residual"] else set())
    assert all(dy < 0 or (dy == 0 and dx < 0) for dy, dx in reads)
    side = config.grid_sizes[2]
    centre = (side // 2, side // 2)
    grad = _embedding_gradient(prior, _inputs(config, "bottom", batch=1), centre)[0]
    rows, cols = np.nonzero(grad)
    found = {(int(i) - centre[0], int(j) - centre[1]) for i, j in zip(rows, cols, strict=True)}
    assert found == reads


@pytest.mark.parametrize(
    ("mask", "anchor", "dilation"),
    [
        (vertical_mask(5, "A"), (2, 2), 1),
        (vertical_mask(3, "B"), (1, 1), 2),
        (horizontal_mask(5, "A"), (0, 2), 2),
        (horizontal_mask(3, "B"), (0, 1), 4),
        (raster_mask(7), (3, 3), 1),
    ],
)
def test_masked_conv_reads_exactly_its_receptive_offsets(mask, anchor, dilation):
    layer = MaskedConv2D(3, mask, anchor=anchor, dilation_rate=dilation)
    x = np.zeros((1, 15, 15, 2), dtype="float32")
    x[0, 7, 7, :] = 1.0  # an impulse: output q reads it when q + offset == (7, 7)
    y = keras.ops.convert_to_numpy(layer(x))[0]
    rows, cols = np.nonzero(np.abs(y).sum(axis=-1))
    read = {(7 - int(i), 7 - int(j)) for i, j in zip(rows, cols, strict=True)}
    assert read == set(layer.receptive_offsets())
    assert np.array_equal(layer.mask, np.asarray(mask, dtype="float32"))


def test_blocks_follow_the_config_with_a_type_a_first_block():
    config = SMOKE.replace(prior_blocks=(5, 2, 2), prior_dilations=(1, 2, 4))
    prior = build_prior(config, "top")
    assert [b.dilation_rate for b in prior.blocks] == [1, 2, 4, 1, 2]
    assert [b.mask_type for b in prior.blocks] == ["A", "B", "B", "B", "B"]
    first = prior.blocks[0].causal_structure()
    assert (0, 0) not in first["horizontal"] and all(dy < 0 for dy, _ in first["vertical"])
    assert all(b.channels == config.prior_channels[0] for b in prior.blocks)
    with pytest.raises(ValueError, match="prior_kernel=1"):
        build_prior(SMOKE.replace(prior_kernel=1), "top")


def _diagonal_codes(n: int, seed: int = 0) -> np.ndarray:
    """int32 (n, 4, 4) top codes where each code is the previous one + 2 (mod 16)."""
    start = np.random.default_rng(seed).integers(0, 16, (n, 1, 1))
    i, j = np.arange(4)[None, :, None], np.arange(4)[None, None, :]
    return ((start + i + 2 * j) % 16).astype("int32")


@pytest.fixture(scope="module")
def trained_top():
    """A smoke top prior after 40 steps on predictable codes, and its fit history.

    The learning rate is raised from the smoke preset's so a few dozen steps show learning.
    """
    config = SMOKE.replace(prior_learning_rate=1e-2)
    prior = compile_prior(build_prior(config, "top"), config)
    codes = _diagonal_codes(640)
    history = prior.fit({"codes": codes}, codes, batch_size=16, epochs=1, verbose=0)
    return prior, history.history, codes


def test_loss_falls_on_predictable_codes(trained_top):
    prior, history, codes = trained_top
    start = np.log(SMOKE.codebook_sizes[0])  # uniform guess, nats
    logs = prior.evaluate({"codes": codes[:64]}, codes[:64], verbose=0, return_dict=True)
    assert logs["loss"] < 0.6 * start
    assert logs["bits_per_code"] == pytest.approx(logs["loss"] / np.log(2), rel=1e-4)
    assert history["bits_per_code"][0] == pytest.approx(history["loss"][0] / np.log(2), rel=1e-4)


def test_masks_hold_whatever_the_stored_kernel_holds(trained_top):
    prior, _, _ = trained_top
    convs = [layer for layer in prior._flatten_layers() if isinstance(layer, MaskedConv2D)]
    first_horizontal = prior.blocks[0].horizontal_conv
    masked = first_horizontal.mask == 0
    # The current-code tap was never zeroed in storage; the mask keeps it out of the output.
    assert np.any(keras.ops.convert_to_numpy(first_horizontal.kernel)[masked] != 0)
    rng = np.random.default_rng(0)
    for conv in convs:
        kernel = keras.ops.convert_to_numpy(conv.kernel)
        noise = rng.normal(scale=10.0, size=kernel.shape).astype("float32")
        conv.kernel.assign(np.where((conv.mask == 0)[:, :, None, None], noise, kernel))
    _assert_causal(prior, "top", SMOKE)


@pytest.mark.parametrize("embedding", ["learned", "codebook"])
def test_saved_prior_loads_with_identical_logits_and_optimizer_state(tmp_path, embedding):
    config = SMOKE.replace(prior_embedding=embedding)
    codebooks = _random_codebooks(config) if embedding == "codebook" else None
    prior = compile_prior(build_prior(config, "middle", codebooks=codebooks), config)
    inputs = _inputs(config, "middle", batch=4)
    prior.fit(inputs, inputs["codes"], batch_size=2, epochs=1, verbose=0)
    path = tmp_path / "prior.keras"
    prior.save(path)
    loaded = keras.models.load_model(path)  # safe mode
    assert np.array_equal(_logits(prior, inputs), _logits(loaded, inputs))
    assert int(loaded.optimizer.iterations.numpy()) == 2
    saved = [keras.ops.convert_to_numpy(v) for v in prior.optimizer.variables]
    restored = [keras.ops.convert_to_numpy(v) for v in loaded.optimizer.variables]
    assert all(np.array_equal(a, b) for a, b in zip(saved, restored, strict=True))
    if codebooks is not None:  # training left the frozen vectors alone
        table = keras.ops.convert_to_numpy(loaded.embedding.codebook)
        assert np.array_equal(table, codebooks["middle"])


def test_codebook_embedding_uses_the_frozen_vqvae_vectors():
    config = SMOKE.replace(prior_embedding="codebook")
    codebooks = _random_codebooks(config)
    prior = build_prior(config, "bottom", codebooks=codebooks)
    tables = {
        "bottom": prior.embedding.codebook,
        **{
            level: embedding.codebook
            for level, embedding in zip(
                prior.conditioning.levels, prior.conditioning.embeddings, strict=True
            )
        },
    }
    assert set(tables) == set(LEVELS)
    trainable = {id(v) for v in prior.trainable_variables}
    for level, table in tables.items():
        assert id(table) not in trainable
        assert np.array_equal(keras.ops.convert_to_numpy(table), codebooks[level])


def test_codebook_embedding_without_codebooks_names_what_is_missing():
    config = SMOKE.replace(prior_embedding="codebook")
    with pytest.raises(ValueError, match="missing top, middle"):
        build_prior(config, "middle")
    codebooks = _random_codebooks(config)
    with pytest.raises(ValueError, match=r"codebooks\['top'\] has shape \(8, 8\)"):
        build_prior(config, "middle", codebooks={**codebooks, "top": codebooks["middle"]})


_JAX_STEP = textwrap.dedent(
    """
    import json, sys
    sys.modules["tensorflow"] = None  # any `import tensorflow` now fails
    import keras
    import numpy as np
    from hvq_utils import get_preset
    from hvq_utils.prior import build_prior, compile_prior

    config = get_preset("smoke")
    rng = np.random.default_rng(0)
    inputs = {
        "codes": rng.integers(0, 8, (4, 8, 8)).astype("int32"),
        "top": rng.integers(0, 16, (4, 4, 4)).astype("int32"),
    }
    prior = compile_prior(build_prior(config, "middle"), config)
    logs = prior.train_on_batch(inputs, inputs["codes"], return_dict=True)
    print(json.dumps({"backend": keras.backend.backend(), **{k: float(v) for k, v in logs.items()}}))
    """
)


def test_a_training_step_runs_on_jax_without_tensorflow():
    # Compile time dominates a one-step run on CPU; XLA's lowest optimisation level halves it.
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    result = subprocess.run(
        [sys.executable, "-c", _JAX_STEP], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logs = json.loads(result.stdout.strip().splitlines()[-1])
    assert logs["backend"] == "jax"
    assert np.isfinite(logs["loss"])
    assert logs["bits_per_code"] == pytest.approx(logs["loss"] / np.log(2), rel=1e-4)


def test_summary_shows_the_output_shape_of_every_layer():
    prior = build_prior(SMOKE, "bottom")
    lines = []
    prior.summary(print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    names = ["embedding", "conditioning", "block_0", "block_1", "head_hidden", "head_logits"]
    assert [layer.name for layer in prior.layers] == names
    for name in names:
        assert name in text
    assert "?" not in text
    assert "(None, 16, 16, 4)" in text  # the logits: bottom grid 16, 4 codes


_MIRRORED = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from hvq_utils import LEVELS, get_preset
    from hvq_utils.prior import build_prior, compile_prior

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    inputs = {
        "codes": rng.integers(0, 8, (8, 8, 8)).astype("int32"),
        "top": rng.integers(0, 16, (8, 4, 4)).astype("int32"),
    }
    out = {"replicas": strategy.num_replicas_in_sync}
    for embedding in ("learned", "codebook"):
        config = get_preset("smoke", prior_embedding=embedding)
        codebooks = {
            level: rng.normal(size=(k, config.latent_dim)).astype("float32")
            for level, k in zip(LEVELS, config.codebook_sizes)
        }
        keras.utils.set_random_seed(0)
        with strategy.scope():
            prior = compile_prior(build_prior(config, "middle", codebooks=codebooks), config)
        # Keras builds the step functions from float placeholders here; one training
        # step (the slow trace) for the learned table, evaluation for the codebook.
        if embedding == "learned":
            loss = prior.fit(inputs, inputs["codes"], batch_size=4, verbose=0).history["loss"][0]
        else:
            loss = prior.evaluate(inputs, inputs["codes"], batch_size=4, verbose=0)[0]
        predicted = prior.predict(inputs, batch_size=4, verbose=0)
        called = keras.ops.convert_to_numpy(prior(inputs, training=False))
        out[embedding] = {
            "mirrored": isinstance(
                prior.trainable_variables[0].value, tf.distribute.DistributedValues
            ),
            "loss": loss,
            "diff": float(np.abs(predicted - called).max()),
            "shape": list(predicted.shape),
        }
    print(json.dumps(out))
    """
)


def test_prior_trains_and_predicts_under_mirrored_strategy_on_two_devices():
    # Logical devices must be set before TensorFlow starts, hence a fresh process.
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    for embedding in ("learned", "codebook"):
        run = out[embedding]
        assert run["mirrored"], embedding
        assert np.isfinite(run["loss"]), embedding
        assert run["shape"] == [8, 8, 8, 8], embedding
        assert run["diff"] < 1e-5, embedding
