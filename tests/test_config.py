import dataclasses

import pytest

from hvq_utils import get_preset
from hvq_utils.config import (
    FIXED_BY_INPUT,
    GROUP_ORDER,
    PRESETS,
    STAGE_GROUPS,
    STAGE_RECORDS,
    Config,
    foreign_setting,
    group_keys,
    group_of,
    parse_overrides,
)


def test_full_preset_holds_the_seed_documents_sizes():
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


def test_every_key_belongs_to_exactly_one_group():
    names = [f.name for f in dataclasses.fields(Config)]
    grouped = [k for g in GROUP_ORDER for k in group_keys(g)]
    assert sorted(grouped) == sorted(names)  # each key once, none left out
    assert set(STAGE_GROUPS.values()) | {"runtime"} == set(GROUP_ORDER)
    assert group_of("prior_dropout") == "prior" and group_of("jpeg_quality") == "data"


def test_a_section_holds_only_its_group():
    c = get_preset("smoke")
    assert set(c.section("encode")) == {"encode_batch_size", "encode_flips"}
    assert "jpeg_quality" not in c.section("vqvae") and "steps" in c.section("vqvae")


def test_adopt_takes_every_upstream_group_from_a_manifest_but_not_the_runtime():
    smoke = get_preset("smoke")
    manifest = {"settings": {g: smoke.section(g) for g in ("data", "vqvae", "encode", "runtime")}}
    c = get_preset("demo").adopt(manifest)
    assert c.grid_sizes == smoke.grid_sizes and c.codebook_sizes == smoke.codebook_sizes
    assert c.prior_blocks == get_preset("demo").prior_blocks  # the user's own group stays
    assert c.checkpoint_every == get_preset("demo").checkpoint_every


def test_preset_is_not_a_setting():
    with pytest.raises(ValueError, match="preset is not a setting; choose it with --preset"):
        get_preset("smoke", **parse_overrides(["preset=demo"]))


@pytest.mark.parametrize(
    "key, value, message",
    [("temperature", 0, "temperature=0"), ("top_p", 1.5, "top_p=1.5"), ("top_k", -1, "top_k=-1")],
)
def test_bad_sampling_controls_fail_at_config_time(key, value, message):
    with pytest.raises(ValueError, match=message):
        get_preset("smoke", **{key: value})


def test_a_stage_reads_its_own_group_and_the_runtime_and_refuses_every_other_key():
    for stage, own in STAGE_GROUPS.items():
        # What the stage takes from its inputs' manifests: every group its output records but its own.
        assert set(STAGE_RECORDS[stage][:-1]) <= set(FIXED_BY_INPUT[stage])
        for group in GROUP_ORDER:
            for key in group_keys(group):
                why = foreign_setting(stage, key)
                if group in (own, "runtime"):
                    assert why is None, (stage, key)
                else:
                    owner = next(s for s, g in STAGE_GROUPS.items() if g == group)
                    assert f"{key} belongs to stage " in why and f"(python -m hvq_utils {owner})" in why
                    assert "\n" not in why


@pytest.mark.parametrize(
    "stage, key, fragment",
    [
        ("train-vqvae", "resize", "resize belongs to stage 01 prepare (python -m hvq_utils prepare); "
         "train-vqvae takes it from its --data input's manifest"),
        ("sample", "steps", "steps belongs to stage 02 train-vqvae (python -m hvq_utils train-vqvae); "
         "sample takes it from its --vqvae input's manifest"),
        ("sample", "prior_dropout", "sample takes it from its --top/--middle/--bottom inputs' manifests"),
        ("encode", "jpeg_quality", "encode takes it from its --vqvae input's manifest"),
        ("prepare", "learning_rate", "belongs to stage 02 train-vqvae (python -m hvq_utils train-vqvae); "
         "prepare does not use it"),
        ("train-prior", "steps", "from its --codes input's manifest; did you mean prior_steps?"),
        ("encode", "batch_size", "did you mean encode_batch_size?"),
        ("sample", "seed", "did you mean sample_seed?"),
    ],
)
def test_a_preset_for_a_stage_refuses_another_stages_setting_naming_its_owner(stage, key, fragment):
    value = get_preset("smoke").to_dict()[key]
    with pytest.raises(ValueError) as e:
        get_preset("smoke", stage=stage, **{key: value})
    assert str(e.value).startswith(f"{key}={value!r}: ") and fragment in str(e.value)


def test_a_preset_for_a_stage_takes_its_own_group_and_the_runtime_and_without_a_stage_anything():
    c = get_preset("smoke", stage="train-prior", prior_steps=3, checkpoint_every=2)
    assert (c.prior_steps, c.checkpoint_every) == (3, 2)
    assert get_preset("smoke", resize="crop", prior_steps=3, n=2).resize == "crop"  # the demo's way
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        get_preset("smoke", stage="prepare", nope=1)
    with pytest.raises(ValueError, match="stage='fly' is unknown"):
        get_preset("smoke", stage="fly")
