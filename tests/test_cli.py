"""The command line: every bad command line is one line and exit code 2; --help lists the
settings of the stage it is asked of."""

import pytest

from hvq_utils.cli import _config, build_parser, main


def _help(stage: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([stage, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help_lists_the_stages_own_settings_only(capsys):
    text = _help("train-prior", capsys)
    assert "prior_dropout (0.1):" in text and "checkpoint_every (500):" in text
    assert "jpeg_quality" not in text and "\n  learning_rate (" not in text
    assert "jpeg_quality (95):" in _help("prepare", capsys)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["prepare", "--src", "x", "--out", "y", "--set", "preset=demo"], "preset is not a setting"),
        (["prepare", "--src", "x", "--out", "y", "--set", "nope=1"], "unknown config key 'nope'"),
        (["prepare", "--src", "x", "--out", "y", "--set", "steps"], "is not key=value"),
        (["train-vqvae", "--data", "x"], "the following arguments are required: --out"),
        (["train-prior", "--level", "side", "--codes", "c", "--out", "o"], "invalid choice: 'side'"),
        (["fly"], "invalid choice: 'fly'"),
        (["encode", "--data", "nowhere", "--vqvae", "v", "--out", "o"], "nowhere has no manifest.json"),
        (
            ["train-vqvae", "--data", "d", "--out", "o", "--set", "resize=crop"],
            "error: --set resize=crop: resize belongs to stage 01 prepare (python -m hvq_utils prepare); "
            "train-vqvae takes it from its --data input's manifest",
        ),
        (
            ["sample", "--vqvae", "v", "--top", "t", "--middle", "m", "--bottom", "b", "--out", "o",
             "--set", "steps=99"],
            "error: --set steps=99: steps belongs to stage 02 train-vqvae (python -m hvq_utils train-vqvae); "
            "sample takes it from its --vqvae input's manifest",
        ),
        (
            ["prepare", "--src", "x", "--out", "y", "--set", "prior_dropout=0.3"],
            "prior_dropout belongs to stage 04-06 train-prior (python -m hvq_utils train-prior); "
            "prepare does not use it",
        ),
        (
            ["train-prior", "--level", "top", "--codes", "c", "--out", "o", "--set", "steps=5"],
            "--set steps=5: steps belongs to stage 02 train-vqvae",
        ),
        (["encode", "--data", "d", "--vqvae", "v", "--out", "o", "--set", "n=4"], "encode does not use it"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert fragment in err


@pytest.mark.parametrize(
    "argv, own",
    [
        (["prepare", "--src", "x", "--out", "y"], {"resize": "crop"}),
        (["train-vqvae", "--data", "d", "--out", "o"], {"learning_rate": 0.002}),
        (["encode", "--data", "d", "--vqvae", "v", "--out", "o"], {"encode_flips": False}),
        (["train-prior", "--level", "top", "--codes", "c", "--out", "o"], {"prior_dropout": 0.3}),
        (["sample", "--vqvae", "v", "--top", "t", "--middle", "m", "--bottom", "b", "--out", "o"], {"n": 3}),
        # demo runs every stage, so it takes a setting of every group
        (["demo"], {"resize": "crop", "steps": 7, "encode_flips": False, "prior_steps": 5, "n": 3}),
    ],
)
def test_a_stage_takes_its_own_settings_and_the_runtime(argv, own):
    sets = [a for k, v in {**own, "checkpoint_every": 2}.items() for a in ("--set", f"{k}={v}")]
    config = _config(build_parser().parse_args([*argv, "--preset", "smoke", *sets]))
    assert {k: getattr(config, k) for k in own} == own and config.checkpoint_every == 2
