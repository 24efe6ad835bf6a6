"""The samplers: the cached path equals the full forward pass, seeds fix the codes on every
sampler, backend and batch size, kept codes stay, controls are checked."""

from __future__ import annotations

import functools
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
from hvq_utils.prior import MaskedConv2D, build_prior
from hvq_utils.prior.layers import horizontal_mask, raster_mask, vertical_mask
from hvq_utils.sampling import (
    CachedSampler,
    ReferenceSampler,
    UncacheableError,
    check_controls,
    sample_levels,
)
from hvq_utils.sampling.backend import full_precision

ROOT = Path(__file__).resolve().parents[1]
SMOKE = get_preset("smoke")
# Bigger grids (8/16/32) and three blocks, so that dilations 1, 2 and 4 all occur.
MID = SMOKE.replace(image_size=64, prior_blocks=(3, 3, 3), prior_dilations=(1, 2, 4))
CONFIGS = {
    "smoke": SMOKE,
    "mid-k5-attention-codebook": MID.replace(
        prior_kernel=5, prior_attention=True, prior_embedding="codebook"
    ),
    "mid-k3-plain-learned": MID.replace(
        prior_kernel=3, prior_attention=False, prior_embedding="learned"
    ),
}


def _randomize(prior, seed: int = 0):
    """Numpy-drawn weights, the same on every backend, big enough for O(1) logits and with
    non-zero biases (a dropped bias would show)."""
    rng = np.random.default_rng(seed)
    for variable in prior.weights:
        shape = tuple(variable.shape)
        if len(shape) == 1:
            std = 0.3
        elif variable.path.endswith(("codebook", "embeddings")):
            std = 1.0
        else:
            std = 1.5 / np.sqrt(np.prod(shape[:-1]))
        variable.assign(rng.normal(0.0, std, shape).astype("float32"))
    return prior


def _prior(config, level: str, seed: int = 0):
    keras.utils.set_random_seed(seed)
    codebooks = None
    if config.prior_embedding == "codebook":
        rng = np.random.default_rng(seed)
        codebooks = {
            name: rng.normal(size=(k, config.latent_dim)).astype("float32")
            for name, k in zip(LEVELS, config.codebook_sizes, strict=True)
        }
    return _randomize(build_prior(config, level, codebooks=codebooks), seed)


@functools.cache
def _smoke_sampler(level: str) -> CachedSampler:
    """One sampler per smoke level for the tests that leave its prior alone: its compiled
    programs serve them all (compiling dominates these tests' time)."""
    return CachedSampler(_prior(SMOKE, level))


def _codes(config, level: str, n: int, seed: int = 0) -> np.ndarray:
    i = config.level(level)
    g = config.grid_sizes[i]
    rng = np.random.default_rng([seed, i])
    return rng.integers(0, config.codebook_sizes[i], (n, g, g)).astype("int32")


def _cond(config, level: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {upper: _codes(config, upper, n, seed) for upper in LEVELS[: config.level(level)]}


def _full_logits(prior, codes, cond) -> np.ndarray:
    """The prior's forward pass, at the samplers' full float32 precision (no TF32 on GPUs)."""
    with full_precision():
        return keras.ops.convert_to_numpy(prior({"codes": codes, **cond}, training=False))


# --- the tap-stacked masked convolution ---

MASKS = {
    "vertical-A": (vertical_mask(5, "A"), (2, 2)),
    "vertical-B": (vertical_mask(3, "B"), (1, 1)),
    "horizontal-A": (horizontal_mask(5, "A"), (0, 2)),
    "horizontal-B": (horizontal_mask(3, "B"), (0, 1)),
    "raster": (raster_mask(7), (3, 3)),
}


@pytest.mark.parametrize("dilation", [1, 2, 4])
@pytest.mark.parametrize("kind", list(MASKS))
def test_tap_stacked_masked_conv_equals_the_layer_call(kind, dilation):
    mask, anchor = MASKS[kind]
    layer = MaskedConv2D(3, mask, anchor=anchor, dilation_rate=dilation)
    rng = np.random.default_rng(dilation)
    x = rng.normal(size=(2, 11, 11, 4)).astype("float32")
    layer.build(x.shape)
    layer.bias.assign(rng.normal(size=(3,)).astype("float32"))
    expected = keras.ops.convert_to_numpy(layer(x))  # (2, 11, 11, 3)
    m = 4 * 3 * 4  # wider than any offset here
    padded = np.pad(x, ((0, 0), (m, m), (m, m), (0, 0)))
    taps = np.stack(
        [padded[:, m + dy : m + dy + 11, m + dx : m + dx + 11] for dy, dx in layer.receptive_offsets()],
        axis=3,
    )  # (2, 11, 11, T, 4): every position's inputs, in tap order
    got = keras.ops.convert_to_numpy(layer.call_on_taps(taps))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert np.abs(expected).max() > 0.1


# --- teacher forcing: the cached path's logits are the full forward pass's ---


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_logits_equal_the_full_forward_pass_at_every_position(name, level):
    config = CONFIGS[name]
    prior = _prior(config, level)
    codes, cond = _codes(config, level, 2, seed=1), _cond(config, level, 2, seed=1)
    full = _full_logits(prior, codes, cond)
    cached = CachedSampler(prior).teacher_forced_logits(codes, cond)
    assert cached.shape == full.shape and cached.dtype == np.float32
    assert np.abs(full).max() > 0.5  # logits of a size where a wrong path would show
    np.testing.assert_allclose(cached, full, atol=1e-4, rtol=0)


_JAX_CHECK = textwrap.dedent(
    """
    import json, sys
    sys.modules["tensorflow"] = None  # the samplers run without TensorFlow
    sys.path.insert(0, "tests")
    import numpy as np
    import keras
    from test_sampling import CONFIGS, _codes, _cond, _full_logits, _prior
    from hvq_utils import LEVELS
    from hvq_utils.sampling import CachedSampler

    out = {"backend": keras.backend.backend(), "diff": {}, "codes": {}}
    for name, config in CONFIGS.items():
        for level in LEVELS:
            prior = _prior(config, level)
            codes, cond = _codes(config, level, 2, seed=1), _cond(config, level, 2, seed=1)
            sampler = CachedSampler(prior)
            cached = sampler.teacher_forced_logits(codes, cond)
            full = _full_logits(prior, codes, cond)
            out["diff"][f"{name}/{level}"] = float(np.abs(cached - full).max())
            if name == "smoke":
                sampled, _ = sampler.sample(
                    3, cond=_cond(config, level, 3), temperature=0.8, top_k=3, top_p=0.9, seed=5,
                    progress=False,
                )
                out["codes"][level] = sampled.tolist()
    print(json.dumps(out))
    """
)


def test_jax_backend_gives_the_full_pass_logits_and_the_same_codes():
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
    assert len(out["diff"]) == len(CONFIGS) * len(LEVELS)
    assert all(diff < 1e-4 for diff in out["diff"].values()), out["diff"]
    for level in LEVELS:  # this process's backend picks the same codes from the same seed
        here, _ = _smoke_sampler(level).sample(
            3, cond=_cond(SMOKE, level, 3), temperature=0.8, top_k=3, top_p=0.9, seed=5,
            progress=False,
        )
        assert np.array_equal(here, np.asarray(out["codes"][level])), level


# --- seeds, batches and the reference ---


def _controls(**overrides):
    return {"temperature": 0.8, "top_k": 3, "top_p": 0.9, "seed": 3, "progress": False, **overrides}


@pytest.mark.parametrize("level", ["top", "middle"])
def test_same_seed_gives_the_reference_samplers_codes_whatever_the_batch_size(level):
    """Also in parts: sample i's noise depends on its global index only."""
    cached = _smoke_sampler(level)
    cond = _cond(SMOKE, level, 3)
    codes, bits = cached.sample(3, cond=cond, batch_size=3, **_controls())
    reference, reference_bits = ReferenceSampler(cached.prior).sample(
        3, cond=cond, batch_size=3, **_controls()
    )
    assert np.array_equal(codes, reference)
    np.testing.assert_allclose(bits, reference_bits, atol=1e-5)
    in_twos, twos_bits = cached.sample(3, cond=cond, batch_size=2, **_controls())  # 2 + 1 padded
    assert np.array_equal(codes, in_twos)
    np.testing.assert_allclose(bits, twos_bits, atol=1e-5)
    last = {name: a[2:] for name, a in cond.items()}
    resumed, resumed_bits = cached.sample(1, cond=last, batch_size=3, first_index=2, **_controls())
    assert np.array_equal(resumed, codes[2:])  # a run in parts gives the run in one go
    np.testing.assert_allclose(resumed_bits, bits[2:], atol=1e-5)
    other, _ = cached.sample(3, cond=cond, batch_size=3, **_controls(seed=4))
    assert not np.array_equal(codes, other)
    assert len({c.tobytes() for c in codes}) == 3  # each image its own noise


def test_bits_are_the_full_pass_negative_log_likelihood_at_temperature_one():
    sampler = _smoke_sampler("middle")
    cond = _cond(SMOKE, "middle", 3)
    codes, bits = sampler.sample(3, cond=cond, **_controls(temperature=1.5))
    logits = _full_logits(sampler.prior, codes, cond).astype("float64")
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_p, codes[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(bits, -picked.mean(axis=(1, 2)) / np.log(2.0), rtol=1e-5)


def test_top_k_one_gives_the_most_likely_code_everywhere_and_temperature_sharpens():
    sampler = _smoke_sampler("bottom")
    cond = _cond(SMOKE, "bottom", 3)

    def most_likely(codes) -> np.ndarray:
        return _full_logits(sampler.prior, codes, cond).argmax(axis=-1)

    codes, _ = sampler.sample(3, cond=cond, top_k=1, temperature=3.0, progress=False)
    assert np.array_equal(codes, most_likely(codes))
    narrow, _ = sampler.sample(3, cond=cond, top_p=1e-6, progress=False)  # only the first rank
    assert np.array_equal(narrow, most_likely(narrow))
    sampled, _ = sampler.sample(3, cond=cond, top_k=2, progress=False)
    assert not np.array_equal(sampled, most_likely(sampled))
    cold, _ = sampler.sample(3, cond=cond, temperature=0.2, progress=False)
    hot, _ = sampler.sample(3, cond=cond, temperature=5.0, progress=False)
    assert np.mean(cold == most_likely(cold)) > np.mean(hot == most_likely(hot)) + 0.2


# --- kept codes ---


def test_kept_rectangle_is_copied_and_the_rest_is_conditioned_on_it():
    sampler = _smoke_sampler("bottom")
    cond = _cond(SMOKE, "bottom", 3)
    kept = _codes(SMOKE, "bottom", 3, seed=7)
    mask = np.zeros(kept.shape, bool)
    mask[:, 3:9, 2:12] = True
    codes, bits = sampler.sample(3, cond=cond, keep=(kept, mask), **_controls())
    assert np.array_equal(codes[mask], kept[mask])
    free, _ = sampler.sample(3, cond=cond, **_controls())
    after = np.zeros(mask.shape, bool)
    after[:, 9:] = True  # free positions after the kept rectangle
    assert not np.array_equal(codes[after], free[after])  # they see the kept codes
    reference, reference_bits = ReferenceSampler(sampler.prior).sample(
        3, cond=cond, keep=(kept, mask), **_controls()
    )
    assert np.array_equal(codes, reference)
    np.testing.assert_allclose(bits, reference_bits, atol=1e-5)


def test_a_wholly_kept_level_is_copied_without_sampling():
    priors = {level: _smoke_sampler(level).prior for level in LEVELS}
    priors["top"] = _prior(SMOKE, "top")  # a fresh one, with no compiled programs yet
    top = _codes(SMOKE, "top", 3, seed=9)
    keep = {"top": (top, np.ones(top.shape, bool))}
    codes, bits = sample_levels(priors, 3, keep=keep, **_controls())
    assert np.array_equal(codes["top"], top)
    from hvq_utils.sampling.levels import cached_sampler

    assert cached_sampler(priors["top"])._programs == {}  # nothing compiled, nothing sampled
    assert cached_sampler(priors["middle"])._programs  # the lower levels were sampled
    logits = _full_logits(priors["top"], top, {}).astype("float64")
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    expected = -np.take_along_axis(log_p, top[..., None], -1)[..., 0].mean(axis=(1, 2)) / np.log(2)
    np.testing.assert_allclose(bits["top"], expected, rtol=1e-5)
    for level in LEVELS:
        g = SMOKE.grid_sizes[SMOKE.level(level)]
        assert codes[level].shape == (3, g, g) and codes[level].dtype == np.int32
        assert bits[level].shape == (3,) and bits[level].dtype == np.float32
    middle_alone, _ = _smoke_sampler("middle").sample(3, cond={"top": top}, **_controls())
    assert np.array_equal(codes["middle"], middle_alone)  # conditioned on the kept top codes


# --- precision ---


def test_a_mixed_bfloat16_prior_samples_the_codes_of_its_float32_twin():
    sampler = _smoke_sampler("middle")
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build_prior(SMOKE, "middle")
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(sampler.prior.get_weights())
    codes, cond = _codes(SMOKE, "middle", 3), _cond(SMOKE, "middle", 3)
    assert not np.array_equal(_full_logits(mixed, codes, cond), _full_logits(sampler.prior, codes, cond))
    expected, expected_bits = sampler.sample(3, cond=cond, **_controls())
    got, got_bits = CachedSampler(mixed).sample(3, cond=cond, **_controls())
    assert np.array_equal(got, expected)
    np.testing.assert_array_equal(got_bits, expected_bits)


# --- refusals ---


@pytest.mark.parametrize(
    ("controls", "match"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"first_index": -2}, "first_index"),
    ],
)
def test_bad_controls_are_refused_with_what_to_do(controls, match):
    with pytest.raises(ValueError, match=match) as error:
        check_controls(**controls)
    assert "\n" not in str(error.value)
    sampler = _smoke_sampler("top")
    with pytest.raises(ValueError, match=match):
        sampler.sample(1, progress=False, **controls)
    with pytest.raises(ValueError, match=match):
        ReferenceSampler(sampler.prior).sample(1, progress=False, **controls)
    priors = {level: _smoke_sampler(level).prior for level in LEVELS}
    with pytest.raises(ValueError, match=match):
        sample_levels(priors, 1, progress=False, **controls)


def test_bad_inputs_are_refused():
    sampler = _smoke_sampler("middle")
    cond = _cond(SMOKE, "middle", 2)
    with pytest.raises(ValueError, match="conditioned on top"):
        sampler.sample(2, progress=False)
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8\)"):
        sampler.sample(2, cond={"top": _codes(SMOKE, "middle", 2)}, progress=False)
    with pytest.raises(ValueError, match="n=0"):
        sampler.sample(0, cond=cond, progress=False)
    with pytest.raises(ValueError, match="n=3 but"):
        sampler.sample(3, cond=cond, progress=False)
    codes = _codes(SMOKE, "middle", 2)
    with pytest.raises(ValueError, match="keep mask"):
        sampler.sample(2, cond=cond, keep=(codes, codes), progress=False)
    with pytest.raises(ValueError, match="codebook has 8"):
        sampler.sample(2, cond=cond, keep=(codes + 8, np.ones(codes.shape, bool)), progress=False)
    with pytest.raises(ValueError, match="lack the bottom"):
        sample_levels({"top": _smoke_sampler("top").prior, "middle": sampler.prior}, 1, progress=False)


def test_layers_it_cannot_cache_are_refused_not_sampled_wrongly():
    prior = _prior(SMOKE, "top")
    prior.blocks[1].skip.activation = keras.activations.get("relu")
    with pytest.raises(UncacheableError, match="block_1/skip: activation relu"):
        CachedSampler(prior)
    prior = _prior(SMOKE, "top")
    attention = prior.blocks[0].attention
    attention._tracker.unlock()  # Keras locks a built layer's sublayers; this test adds one
    attention.extra = keras.layers.LayerNormalization()
    with pytest.raises(UncacheableError, match="unknown layer type LayerNormalization"):
        CachedSampler(prior)
    prior = _prior(SMOKE, "top")
    first = prior.blocks[0]
    first._tracker.unlock()
    first.horizontal_conv = MaskedConv2D(
        first.horizontal_conv.filters, horizontal_mask(3, "B"), anchor=(0, 1)
    )  # reads the current code
    with pytest.raises(UncacheableError, match="block_0/horizontal_conv"):
        CachedSampler(prior)
