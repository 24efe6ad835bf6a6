"""bench/quality.py: its variant syntax, its metrics on a smoke-preset VQ-VAE, its table."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from hvq_utils import LEVELS, get_preset

_PATH = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
_SPEC = importlib.util.spec_from_file_location("quality_bench", _PATH)
quality = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(quality)


def test_code_stats_counts_used_codes_and_perplexity():
    assert quality.code_stats(np.array([3, 3, 0, 0])) == pytest.approx((0.5, 2.0))
    assert quality.code_stats(np.ones(8, np.int64)) == pytest.approx((1.0, 8.0))
    usage, perplexity = quality.code_stats(np.array([9, 1, 0, 0]))
    assert usage == 0.5 and 1.0 < perplexity < 2.0


def test_psnr_and_ssim_per_image():
    rng = np.random.default_rng(0)
    images = rng.random((3, 16, 16, 3), dtype=np.float32)
    assert quality.psnr_per_image(images, images) == pytest.approx([100.0] * 3)  # psnr_db's floor
    assert quality.ssim_per_image(images, images) == pytest.approx([1.0] * 3)
    noisy = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1).astype(np.float32)
    mse = np.mean((noisy - images) ** 2, axis=(1, 2, 3))
    assert quality.psnr_per_image(images, noisy) == pytest.approx(-10 * np.log10(mse), abs=1e-3)
    assert np.all(quality.ssim_per_image(images, noisy) < 1.0)


def test_validation_scores_on_a_smoke_vqvae():
    from hvq_utils.vqvae import build_vqvae

    config = get_preset("smoke")
    vq = build_vqvae(config)
    rng = np.random.default_rng(1)
    batches = [rng.random((4, 32, 32, 3), dtype=np.float32), rng.random((2, 32, 32, 3), dtype=np.float32)]
    scores = quality.validation_scores(vq, batches)
    assert scores["images"] == 6
    assert math.isfinite(scores["psnr"]) and -1.0 <= scores["ssim"] <= 1.0
    for level, k in zip(LEVELS, config.codebook_sizes, strict=True):
        assert 0.0 < scores["code_usage"][level] <= 1.0
        assert 1.0 <= scores["perplexity"][level] <= k + 1e-9
        assert math.isfinite(scores["psnr_lost"][level])
    with pytest.raises(ValueError, match="no validation images"):
        quality.validation_scores(vq, [])


def test_variant_takes_the_vqvae_keys_of_a_second_preset_and_colon_tuples():
    name, c = quality.parse_variant("s=smoke+seed,decoder_channels=16")
    assert name == "s" and c.arch == "seed" and c.codebook_update == "grad" and c.restart_after == 0
    assert c.encoder_channels == (128, 128, 128)  # the seed's 5 widths cut to smoke's 3 strides
    assert c.decoder_channels == 16 and c.image_size == 32
    assert c.prior_embedding == get_preset("smoke").prior_embedding  # prior keys are not taken
    _, c = quality.parse_variant("a=smoke,encoder_channels=8:8:12,res_blocks=2")
    assert c.encoder_channels == (8, 8, 12) and c.res_blocks == 2
    for bad in ("smoke", "a=nope", "a=smoke+nope", "a b=smoke"):
        with pytest.raises(ValueError):
            quality.parse_variant(bad)


@pytest.mark.parametrize("scale", ["smoke", "demo"])
def test_default_variants_parse_at_each_scale(scale):
    configs = dict(quality.parse_variant(s) for s in quality.default_variants(scale))
    assert set(configs) == {"full", "seed"}
    assert configs["full"] == get_preset(scale)
    seed = configs["seed"]
    assert seed.arch == "seed" and seed.image_size == get_preset(scale).image_size
    assert seed.encoder_channels == (32,) * get_preset(scale).downsamples[0] and seed.decoder_channels == 64


def test_markdown_table_has_a_row_per_variant_and_budget():
    scores = {
        "psnr": 20.0, "ssim": 0.5,
        "code_usage": dict.fromkeys(LEVELS, 0.5), "perplexity": dict.fromkeys(LEVELS, 3.0),
        "psnr_lost": dict.fromkeys(LEVELS, 1.0),
    }
    run = {"parameters": 1000, "steps": 10, "train_seconds": 5.0, "images_per_s": 8.0, "validation": scores}
    prior = {"bits_per_code": {"train": 1.0, "val": 1.5}, "uniform_bits": 3.0, "steps": 7}
    priors = dict.fromkeys(LEVELS, prior)
    result = {
        "budgets": {"steps": 10, "seconds": 5.0},
        "variants": {
            "a": {"steps": run, "time": {**run, "images_per_s": None}, "priors": priors},
            "b": {"steps": run},
        },
    }
    table = quality.markdown_table(result)
    assert table.count("| a | equal") == 2 and table.count("| b | equal") == 1
    assert "equal time (5 s)" in table and "20.00" in table and "1.50 / 1.50 / 1.50" in table
