"""``usnet profile``: model arguments, sizes and output paths are checked before any work."""

from __future__ import annotations

from cli_checks import fails, succeeds


def test_an_absurd_model_argument_is_refused_before_allocating(capsys) -> None:
    fails(capsys, ["profile", "us_mlp", "--set", "num_classes=1000000000000"],
          "--set num_classes=1000000000000", "needs a tensor of shape (1000000000000, 256)",
          "this machine's memory")
    fails(capsys, ["profile", "us_mlp", "--set", "hidden=eight"], "do not build model 'us_mlp'")
    fails(capsys, ["profile", "us_mlp", "--set", "hidden=[8"], "--set 'hidden=[8'", "not YAML")


def test_bad_sizes_models_and_paths(capsys, tmp_path) -> None:
    fails(capsys, ["profile", "us_mlp", "--input-size", "0"], "--input-size: must be >= 1, got 0")
    (tmp_path / "file").write_text("x")
    fails(capsys, ["profile", str(tmp_path / "file")], "is a file", "give a checkpoint folder")
    fails(capsys, ["profile", "us_mlp", "--csv", str(tmp_path / "file" / "t.csv")],
          "--csv", "file' is a file, not a folder")
    out = succeeds(capsys, ["profile", "us_mlp", "--widths", "0.5", "--csv", str(tmp_path / "t.csv")])
    assert "wrote" in out and (tmp_path / "t.csv").read_text().startswith("width,macs,params")
