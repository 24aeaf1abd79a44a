"""``usnet``: argument errors, user errors, interrupts and bugs each end the way they should."""

from __future__ import annotations

import pytest
from cli_checks import fails

from usnet import UsageError, cli
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
        (UsageError("first line\n  second line"), "first line; second line"),
        (OSError(28, "No space left on device", "out/model.pt2"), "No space left on device"),
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
    assert cli.main(["profile", "us_mlp"]) == 1  # our own bug: shown, not dressed as bad input
    err = capsys.readouterr().err
    assert "Traceback" in err and "return None + 1" in err
    assert err.splitlines()[-1] == (
        "usnet profile: TypeError: this is a bug in usnet, please report it with the traceback "
        "above"
    )


@pytest.mark.parametrize(
    "error",
    [
        ValueError("not enough values to unpack (expected 2, got 1)"),  # Python's, not ours
        OSError(5, "Input/output error"),
        RuntimeError("a tensor of the wrong size"),
    ],
)
def test_errors_not_meant_for_users_are_bugs_with_a_traceback(capsys, monkeypatch, error) -> None:
    def run(args):
        raise error

    monkeypatch.setattr(profile, "run", run)
    assert cli.main(["profile", "us_mlp"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug in usnet" in err


def test_usage_errors_are_the_user_errors() -> None:
    """Every error class meant for users derives from UsageError (so the CLI shows one line)."""
    from usnet import ConvertError
    from usnet.config import ConfigError

    assert issubclass(ConfigError, UsageError) and issubclass(ConvertError, UsageError)
    assert issubclass(UsageError, ValueError)  # callers catching ValueError keep working


def test_no_plain_value_error_is_raised_in_usnet() -> None:
    """Checks of user input raise UsageError; a plain ValueError would print as a bug."""
    import ast
    from pathlib import Path

    import usnet

    found = []
    for path in Path(usnet.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            exc = node.exc if isinstance(node, ast.Raise) else None
            if isinstance(exc, ast.Call) and getattr(exc.func, "id", None) == "ValueError":
                found.append(f"{path.name}:{node.lineno}")
    assert not found, found


def test_sigterm_cleans_up_like_ctrl_c(capsys, monkeypatch, tmp_path) -> None:
    """A terminated command removes the temporary file of the write it was in (and releases
    its locks): no .NAME.*.tmp stays behind."""
    import os
    import signal

    from usnet import io

    def run(args):
        def write(tmp):
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)

        io.atomic_write(tmp_path / "metrics.csv", write)

    monkeypatch.setattr(profile, "run", run)
    assert cli.main(["profile", "us_mlp"]) == 143
    assert capsys.readouterr().err == "usnet profile: terminated\n"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
