"""Running ``usnet`` in-process and checking that bad input ends in one clear line."""

from __future__ import annotations

from usnet import cli


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run ``usnet ARGV``: exit code 2 and one stderr line ``usnet CMD: error: ...`` holding
    every needle (the bad field or value). Returns that line."""
    capsys.readouterr()
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    lines = [line for line in err.splitlines() if not line.startswith("waiting for")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"usnet {argv[0]}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def succeeds(capsys, argv: list[str]) -> str:
    """Run ``usnet ARGV``: exit code 0; returns stdout."""
    capsys.readouterr()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out
