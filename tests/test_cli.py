"""The command line: every bad command line is one line and exit code 2; --help lists the
settings of the stage it is asked of."""

import pytest

from hvq_utils.cli import main


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
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_code_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert fragment in err
