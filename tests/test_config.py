import pytest

from hvq_utils import get_preset
from hvq_utils.config import PRESETS, Config, parse_overrides


def test_full_preset_holds_the_seeds_numbers():
    c = get_preset("full")
    assert c.image_size == 512
    assert c.grid_sizes == (16, 32, 64)
    assert c.latent_dim == 64
    assert c.codebook_sizes == (512, 256, 64)
    assert (c.prior_blocks, c.prior_channels) == ((20, 20, 15), (256, 128, 64))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_keeps_the_grid_ratios(name):
    top, middle, bottom = get_preset(name).grid_sizes
    assert middle == 2 * top and bottom == 2 * middle


def test_image_size_not_divisible_by_the_top_reduction_names_key_and_fix():
    with pytest.raises(ValueError, match=r"image_size=500 is not divisible by 32.*use 512"):
        get_preset("full", image_size=500)


def test_codebook_under_two_codes_is_refused():
    with pytest.raises(ValueError, match="codebook_sizes has 1 codes for the middle level"):
        get_preset("full", codebook_sizes=(512, 1, 64))


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown config key 'imagesize'; known keys: .*image_size"):
        get_preset("demo", imagesize=64)


def test_unknown_choice_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"resize='squash' is not allowed; use one of pad, crop, stretch"):
        get_preset("demo", resize="squash")


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="preset='huge' is unknown"):
        get_preset("huge")


def test_command_line_overrides_are_coerced_to_field_types():
    c = get_preset(
        "smoke", **parse_overrides(["steps=9", "cbam=false", "codebook_sizes=4,4,2", "val_fraction=0.5"])
    )
    assert (c.steps, c.cbam, c.codebook_sizes, c.val_fraction) == (9, False, (4, 4, 2), 0.5)


@pytest.mark.parametrize("bad", ["steps", "=3", "steps=many", "cbam=perhaps"])
def test_malformed_overrides_fail_with_a_message(bad):
    with pytest.raises(ValueError, match="steps|cbam|key=value"):
        get_preset("smoke", **parse_overrides([bad]))


def test_config_round_trips_through_a_dict():
    c = get_preset("demo", resize="crop")
    assert Config.from_dict(c.to_dict()) == c
