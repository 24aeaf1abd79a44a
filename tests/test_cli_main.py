"""``usnet``: argument errors, user errors, interrupts and bugs each end the way they should."""

from __future__ import annotations

import pytest
from cli_checks import fails

from usnet import cli
from usnet.commands import profile


def test_argument_errors_are_one_line_with_exit_code_2(capsys) -> None:
    fails(capsys, ["calibrate"], "the following arguments are required: checkpoint, --widths")
    fails(capsys, ["calibrate", "ckpt", "--widths", "0.5", "--num-samples", "0"],
          "argument --num-samples: must be >= 1, got 0")
    fails(capsys, ["export", "ckpt", "--width", "0.5", "--input-size", "x"],
          "argument --input-size: 'x' is not an integer")
    capsys.readouterr()
    with pytest.raises(SystemExit):  # a missing command is usage, from the top parser
        cli.build_parser().parse_args([])
    assert cli.main(["--version"]) == 0 and "usnet " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (FileExistsError(17, "File exists", "some/file"), "File exists: 'some/file'"),
        (PermissionError(13, "Permission denied", "ckpt"), "Permission denied: 'ckpt'"),
        (IsADirectoryError(21, "Is a directory", "out"), "Is a directory: 'out'"),
        (ValueError("first line\n  second line"), "first line; second line"),
    ],
)
def test_user_errors_are_one_line(capsys, monkeypatch, error, needle) -> None:
    def run(args):
        raise error

    monkeypatch.setattr(profile, "run", run)
    fails(capsys, ["profile", "us_mlp"], needle)


def test_interrupt_exits_130_and_bugs_keep_their_traceback(capsys, monkeypatch) -> None:
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(profile, "run", interrupted)
    assert cli.main(["profile", "us_mlp"]) == 130
    assert capsys.readouterr().err == "usnet profile: interrupted\n"

    def bug(args):
        return None + 1

    monkeypatch.setattr(profile, "run", bug)
    with pytest.raises(TypeError):  # our own bug: shown, not dressed as bad input
        cli.main(["profile", "us_mlp"])
