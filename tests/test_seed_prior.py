"""The seed architecture's priors (prior_arch="seed", ../shared/SEED.md): its per-level
kernels, dilations, dropout, attention, BatchNorm and conditioning; causal in inference;
the cached sampler's logits equal its full forward pass; saved and loaded; trained."""

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
from hvq_utils.prior import CausalAttention, build_prior, compile_prior, seed_layout
from hvq_utils.sampling import CachedSampler, ReferenceSampler
from hvq_utils.sampling.backend import full_precision

ROOT = Path(__file__).resolve().parents[1]
# Five blocks, so that the seed's dilations at block index % 5 in {2, 4} occur; grids 4/8/16.
SEED_SMOKE = get_preset(
    "smoke", prior_arch="seed", prior_embedding="codebook", prior_blocks=(5, 5, 5), prior_dropout=0.2
)


def _codebooks(config, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        level: rng.normal(size=(k, config.latent_dim)).astype("float32")
        for level, k in zip(LEVELS, config.codebook_sizes, strict=True)
    }


def _randomize(prior, config, seed: int = 0):
    """Numpy-drawn weights, the same on every backend: non-zero biases, BatchNorm statistics
    far from the identity (moving variances kept positive), and the output layer scaled so
    that the logits vary by about 1 between positions (the head's attention modules each
    scale their input by two sigmoids, which would leave them nearly constant)."""
    rng = np.random.default_rng(seed)
    for variable in prior.weights:
        shape = tuple(variable.shape)
        path = variable.path
        if path.endswith("codebook"):
            value = rng.normal(0.0, 1.0, shape)
        elif path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif path.endswith("gamma"):
            value = rng.normal(1.0, 0.3, shape)
        elif len(shape) == 1:
            value = rng.normal(0.0, 0.3, shape)
        else:
            value = rng.normal(0.0, 1.5 / np.sqrt(np.prod(shape[:-1])), shape)
        variable.assign(value.astype("float32"))
    codes, cond = _codes(config, prior.level, 2, seed + 99), _cond(config, prior.level, 2, seed + 99)
    logits = _full_logits(prior, codes, cond)
    spread = (logits - logits.mean(axis=(1, 2), keepdims=True)).std()
    kernel = prior.head_logits.kernel
    kernel.assign(keras.ops.convert_to_numpy(kernel) / spread)  # the logits are linear in it
    return prior


def _prior(config, level: str, seed: int = 0):
    keras.utils.set_random_seed(seed)
    return _randomize(build_prior(config, level, codebooks=_codebooks(config, seed)), config, seed)


def _codes(config, level: str, n: int, seed: int = 0) -> np.ndarray:
    i = config.level(level)
    g = config.grid_sizes[i]
    rng = np.random.default_rng([seed, i])
    return rng.integers(0, config.codebook_sizes[i], (n, g, g)).astype("int32")


def _cond(config, level: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {upper: _codes(config, upper, n, seed) for upper in LEVELS[: config.level(level)]}


def _full_logits(prior, codes, cond) -> np.ndarray:
    with full_precision():
        return keras.ops.convert_to_numpy(prior({"codes": codes, **cond}, training=False))


# --- the layout ---


def test_seed_layout_has_the_seed_numbers_at_its_preset():
    config = get_preset("seed")
    assert config.prior_arch == "seed" and config.prior_embedding == "codebook"
    expected = {
        # level: (blocks, first kernel, later kernel, dilation at i % 5 == 2, at 4, dropout, head)
        "top": (20, 7, 3, 2, 2, 0.2, 2),
        "middle": (20, 9, 3, 2, 3, 0.2, 2),
        "bottom": (15, 9, 5, 2, 3, 0.0, 3),
    }
    for level, (blocks, first, later, d2, d4, dropout, head) in expected.items():
        layout = seed_layout(config, level)
        assert layout["kernel_sizes"] == [first] + [later] * (blocks - 1), level
        assert layout["dilations"] == [{2: d2, 4: d4}.get(b % 5, 1) for b in range(blocks)], level
        assert layout["dropout"] == pytest.approx(dropout), level
        assert layout["head_attention"] == head, level
        assert layout["batch_norm"] and not layout["first_block_attention"], level
        assert layout["conditioning_upsampling"] == "transposed", level
        assert (layout["spatial_kernel"], layout["spatial_dilation"]) == (5, 2), level


def test_seed_prior_is_built_as_its_layout_says():
    dims = {level: SEED_SMOKE.prior_channels[SEED_SMOKE.level(level)] for level in LEVELS}
    for level in LEVELS:
        prior = build_prior(SEED_SMOKE, level, codebooks=_codebooks(SEED_SMOKE))
        layout = seed_layout(SEED_SMOKE, level)
        blocks = prior.blocks
        assert [b.kernel_size for b in blocks] == layout["kernel_sizes"]
        assert [b.dilation_rate for b in blocks] == layout["dilations"]
        assert [b.mask_type for b in blocks] == ["A"] + ["B"] * 4
        assert not blocks[0].has_residual and all(b.has_residual for b in blocks[1:])
        assert blocks[0].attention is None
        for b in blocks[1:]:
            assert isinstance(b.attention, CausalAttention)
            assert b.attention.spatial.kernel_size == (5, 5) and b.attention.spatial.dilation_rate == 2
        assert all(b.dropout_rate == layout["dropout"] for b in blocks)
        assert all(b.horizontal_norm is not None for b in blocks)
        assert all(b.vertical_norm is not None for b in blocks[:-1])
        assert blocks[-1].vertical_norm is None  # its vertical output is read by nothing
        assert prior.head_norm is not None
        assert len(prior.head_attentions) == layout["head_attention"]
        assert prior.embedding.codebook_dim == SEED_SMOKE.latent_dim  # frozen codebook input
        if prior.conditioning is None:
            assert level == "top"
            continue
        layers = {layer.name: layer for layer in prior.conditioning._flatten_layers(include_self=False)}
        steps = {"middle": {"top": 1}, "bottom": {"top": 2, "middle": 1}}[level]
        for upper, n in steps.items():
            convs = [layers[f"{upper}_transposed_{t}"] for t in range(n)]
            assert all(c.kernel_size == (4, 4) and c.strides == (2, 2) for c in convs)
            assert f"{upper}_transposed_{n}" not in layers
            assert convs[0].kernel.shape == (4, 4, dims[level], SEED_SMOKE.latent_dim)  # raw vectors
            assert layers[f"{upper}_embedding"].projection is None


def test_hvq_priors_hold_none_of_the_seed_layers():
    prior = build_prior(SEED_SMOKE.replace(prior_arch="hvq"), "bottom", codebooks=_codebooks(SEED_SMOKE))
    assert prior.head_norm is None and prior.head_attentions == []
    assert all(b.vertical_norm is None and b.attention is not None for b in prior.blocks)
    assert prior.conditioning.upsampling == "nearest"
    assert all(b.kernel_size == SEED_SMOKE.prior_kernel for b in prior.blocks)


# --- causality (inference) ---


@pytest.mark.parametrize("level", LEVELS)
def test_seed_prior_logits_do_not_move_with_codes_at_or_after_their_position(level):
    config = SEED_SMOKE
    prior = _prior(config, level)
    side = config.grid_sizes[config.level(level)]
    k = config.codebook_sizes[config.level(level)]
    positions = [(0, 0), (0, side - 1), (1, 0), (side // 2, side // 2 - 1), (side - 1, side - 1)]
    codes = np.repeat(_codes(config, level, 1, seed=3), len(positions), axis=0)
    cond = {name: np.repeat(a, len(positions), axis=0) for name, a in _cond(config, level, 1, 3).items()}
    changed = codes.copy()
    for b, (i, j) in enumerate(positions):
        changed[b, i, j] = (changed[b, i, j] + 1) % k
    before = _full_logits(prior, codes, cond).reshape(len(positions), side * side, -1)
    after = _full_logits(prior, changed, cond).reshape(len(positions), side * side, -1)
    for b, (i, j) in enumerate(positions):
        p = i * side + j
        assert np.array_equal(before[b, : p + 1], after[b, : p + 1]), (level, (i, j))
        if p + 1 < side * side:
            assert not np.array_equal(before[b, p + 1 :], after[b, p + 1 :]), (level, (i, j))


# --- the cached sampler ---


@pytest.mark.parametrize("level", LEVELS)
def test_cached_logits_equal_the_seed_priors_full_forward_pass(level):
    prior = _prior(SEED_SMOKE, level)
    codes, cond = _codes(SEED_SMOKE, level, 2, seed=1), _cond(SEED_SMOKE, level, 2, seed=1)
    full = _full_logits(prior, codes, cond)
    cached = CachedSampler(prior).teacher_forced_logits(codes, cond)
    assert cached.shape == full.shape and cached.dtype == np.float32
    spread = (full - full.mean(axis=(1, 2), keepdims=True)).std()
    assert spread > 0.2  # logits that vary between positions: a wrong path would show
    np.testing.assert_allclose(cached, full, atol=1e-4, rtol=0)


def test_cached_sampler_picks_the_reference_samplers_codes_for_a_seed_prior():
    prior = _prior(SEED_SMOKE, "middle")
    cond = _cond(SEED_SMOKE, "middle", 2)
    controls = {"temperature": 0.8, "top_k": 3, "seed": 3, "progress": False}
    codes, bits = CachedSampler(prior).sample(2, cond=cond, **controls)
    reference, reference_bits = ReferenceSampler(prior).sample(2, cond=cond, **controls)
    assert np.array_equal(codes, reference)
    np.testing.assert_allclose(bits, reference_bits, atol=1e-5)


# --- training, saving, loading ---


def test_seed_prior_trains_saves_and_loads_and_the_sampler_follows(tmp_path):
    config = SEED_SMOKE.replace(prior_learning_rate=1e-2)
    codebooks = _codebooks(config)
    keras.utils.set_random_seed(0)
    prior = compile_prior(build_prior(config, "bottom", codebooks=codebooks), config)
    inputs = {"codes": _codes(config, "bottom", 8), **_cond(config, "bottom", 8)}
    norm = prior.blocks[1].horizontal_norm
    before = keras.ops.convert_to_numpy(norm.moving_mean).copy()
    history = prior.fit(inputs, inputs["codes"], batch_size=4, epochs=2, verbose=0).history
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    assert int(prior.optimizer.iterations.numpy()) == 4
    assert not np.array_equal(keras.ops.convert_to_numpy(norm.moving_mean), before)  # BN trained
    path = tmp_path / "prior.keras"
    prior.save(path)
    loaded = keras.models.load_model(path)  # safe mode
    assert loaded.get_config() == prior.get_config()
    logits = _full_logits(prior, inputs["codes"], _cond(config, "bottom", 8))
    assert np.array_equal(logits, _full_logits(loaded, inputs["codes"], _cond(config, "bottom", 8)))
    for name in LEVELS:  # training left the frozen vectors alone
        table = loaded.embedding if name == "bottom" else loaded.conditioning.embeddings[
            loaded.conditioning.levels.index(name)
        ]
        assert np.array_equal(keras.ops.convert_to_numpy(table.codebook), codebooks[name])
    codes, cond = inputs["codes"][:2], _cond(config, "bottom", 2)
    cached = CachedSampler(loaded).teacher_forced_logits(codes, cond)
    np.testing.assert_allclose(cached, _full_logits(loaded, codes, cond), atol=1e-4, rtol=0)


_JAX_CHECK = textwrap.dedent(
    """
    import json, sys
    sys.modules["tensorflow"] = None  # priors and samplers run without TensorFlow
    sys.path.insert(0, "tests")
    import numpy as np
    import keras
    from test_seed_prior import SEED_SMOKE, _codes, _cond, _full_logits, _prior
    from hvq_utils import LEVELS
    from hvq_utils.prior import compile_prior
    from hvq_utils.sampling import CachedSampler

    out = {"backend": keras.backend.backend(), "diff": {}}
    for level in LEVELS:
        prior = _prior(SEED_SMOKE, level)
        codes, cond = _codes(SEED_SMOKE, level, 2, seed=1), _cond(SEED_SMOKE, level, 2, seed=1)
        cached = CachedSampler(prior).teacher_forced_logits(codes, cond)
        out["diff"][level] = float(np.abs(cached - _full_logits(prior, codes, cond)).max())
    compile_prior(prior, SEED_SMOKE)
    logs = prior.train_on_batch({"codes": codes, **cond}, codes, return_dict=True)
    out["loss"] = float(logs["loss"])
    print(json.dumps(out))
    """
)


def test_seed_priors_train_and_sample_on_jax_without_tensorflow():
    env = {
        **os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
        "XLA_FLAGS": "--xla_backend_optimization_level=0",  # compile time dominates here
    }
    result = subprocess.run(
        [sys.executable, "-c", _JAX_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    assert all(diff < 1e-4 for diff in out["diff"].values()), out["diff"]
    assert np.isfinite(out["loss"])
