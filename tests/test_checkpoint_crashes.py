"""Checkpoints survive crashes and concurrent writers: a save cut off between its renames, two
processes calibrating one checkpoint, outputs written after a crash (issue 8, defects 8 and 9)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fake_stats import CHECKPOINT_WIDTHS as WIDTHS
from fake_stats import fake_calibrate

import usnet
from usnet import checkpoint
from usnet.checkpoint import load, read_info, read_meta, save, update_meta
from usnet.nn import width_space


def test_a_save_cut_off_between_its_renames_leaves_the_previous_checkpoint_loadable(
    tmp_path, monkeypatch
):
    import os

    from usnet import checkpoint

    path = tmp_path / "ckpt"
    first = usnet.create_model("us_mlp", hidden=[8])
    checkpoint.save(first, path)
    (path / "spectrum.json").write_text("{}")
    second = usnet.create_model("us_mlp", hidden=[8])
    real = os.replace

    def cut_off(src, dst):
        if str(src).endswith(".tmp") and str(dst) == str(path):
            raise KeyboardInterrupt("killed between the renames")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", cut_off)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(second, path)
    monkeypatch.setattr(os, "replace", real)
    assert not path.exists()
    loaded = checkpoint.load(path)  # falls back to the previous checkpoint set aside
    for a, b in zip(loaded.parameters(), first.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    checkpoint.save(second, path)  # the next save completes and keeps the other files
    assert (path / "spectrum.json").exists()
    for a, b in zip(checkpoint.load(path).parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b)


# -- concurrent writers (issue 8, defect 8) -------------------------------------------------
def _calibrate_after_all_loaded(ckpt: str, widths: str, barrier) -> None:
    """``usnet calibrate`` in a process that waits, after loading, until the other loaded too."""
    import sys

    from usnet import cli

    real_load = checkpoint.load

    def load_then_wait(*args, **kwargs):
        model = real_load(*args, **kwargs)
        barrier.wait()
        return model

    checkpoint.load = load_then_wait
    argv = ["calibrate", ckpt, "--widths", widths, "--num-samples", "24", "--batch-size", "12"]
    sys.exit(cli.main(argv))


def _run_all(target, args_list) -> list[int | None]:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]


def test_two_calibrate_processes_on_one_checkpoint_keep_both_widths(tmp_path) -> None:
    import multiprocessing

    from fixtures import write_fashion_mnist

    data = write_fashion_mnist(tmp_path / "fmnist", n_train=24, n_test=8)
    config = {"data": {"name": "fashion_mnist", "root": str(data)}}
    torch.manual_seed(0)
    ckpt = save(usnet.create_model("us_mobilenet_v1_small"), tmp_path / "ckpt", {"config": config})
    barrier = multiprocessing.get_context("fork").Barrier(2, timeout=60)
    codes = _run_all(
        _calibrate_after_all_loaded, [(str(ckpt), w, barrier) for w in ("0.5", "0.75")]
    )
    assert codes == [0, 0]
    model = load(ckpt)
    assert usnet.is_calibrated(model, 0.5) and usnet.is_calibrated(model, 0.75)
    assert sorted(c["width"] for c in read_info(ckpt)["calibrated"]) == [0.5, 0.75]
    assert read_meta(ckpt) == {"config": config}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "fmnist"]  # no lock/temp left


def _save_calibrated_after_all_loaded(ckpt: str, width: float, barrier) -> None:
    model = load(ckpt)
    barrier.wait()
    fake_calibrate(model, [width], seed=int(width * 100))
    for _ in range(5):  # and again: saves of one folder racing each other never crash
        save(model, ckpt, meta={"by": width})


def test_library_saves_keep_widths_calibrated_by_another_process(model, ckpt) -> None:
    import multiprocessing

    barrier = multiprocessing.get_context("fork").Barrier(2, timeout=60)
    codes = _run_all(
        _save_calibrated_after_all_loaded, [(str(ckpt), w, barrier) for w in (0.45, 0.55)]
    )
    assert codes == [0, 0]
    again = load(ckpt)
    for w in [*WIDTHS, 0.45, 0.55]:
        assert usnet.is_calibrated(again, w), w
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt"]


def test_save_statistics_refuses_a_checkpoint_saved_with_other_weights(model, ckpt) -> None:
    loaded = load(ckpt)
    fake_calibrate(loaded, [0.45])
    checkpoint.save_statistics(loaded, ckpt)  # same weights: fine, meta kept
    assert usnet.is_calibrated(load(ckpt), 0.45)
    assert read_meta(ckpt) == {"config": {"lr": 0.1}, "epoch": 3}
    with torch.no_grad():
        model.classifier.weight.add_(1)
    save(model, ckpt, meta={"epoch": 4})  # e.g. training saved newer weights meanwhile
    fake_calibrate(loaded, [0.55])
    with pytest.raises(ValueError, match="saved with other weights since this model was loaded"):
        checkpoint.save_statistics(loaded, ckpt)
    assert read_meta(ckpt) == {"epoch": 4}
    assert not usnet.is_calibrated(load(ckpt), 0.55)
    # a plain save of other weights drops the statistics, which belonged to the old weights
    assert not usnet.is_calibrated(load(ckpt), 0.45)


# -- crash states on disk (issue 8, defect 9) -------------------------------------------------
def _crash_between_renames(ckpt: Path) -> Path:
    """The disk after a save was killed between its renames: the checkpoint aside, a half copy."""
    old = ckpt.with_name(f".{ckpt.name}.old")
    os.replace(ckpt, old)
    half = ckpt.with_name(f".{ckpt.name}.k3x_9a2b.tmp")
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"half a file")
    return old


def test_an_output_written_after_a_crash_does_not_strand_the_model(model, ckpt) -> None:
    (ckpt / "resume.pt").write_bytes(b"state")
    _crash_between_renames(ckpt)
    ckpt.mkdir()  # what `usnet spectrum` or `usnet export` did next: NAME/ with their outputs
    (ckpt / "spectrum.json").write_text("{}")
    loaded = load(ckpt)  # the load restores the checkpoint and keeps the outputs
    assert width_space(loaded).calibrated == width_space(model).calibrated
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors",
        "resume.pt",
        "spectrum.json",
        "usnet.json",
    ]
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt"]  # .old and .tmp gone


def test_the_next_save_recovers_a_crashed_one(model, ckpt) -> None:
    (ckpt / "resume.pt").write_bytes(b"state")
    _crash_between_renames(ckpt)
    save(model, ckpt, meta={"epoch": 5})
    assert read_meta(ckpt) == {"epoch": 5} and (ckpt / "resume.pt").read_bytes() == b"state"
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt"]
    # a crash after the second rename leaves a stale .old: the next save removes it
    stale = ckpt.with_name(".ckpt.old")
    stale.mkdir()
    (stale / "usnet.json").write_text("{}")
    update_meta(ckpt, note="x")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt"]
    assert read_meta(ckpt) == {"epoch": 5, "note": "x"}


def test_a_read_only_folder_still_loads_the_checkpoint_aside(model, ckpt, monkeypatch) -> None:
    _crash_between_renames(ckpt)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(checkpoint.folder, "recover", refuse)
    assert width_space(load(ckpt)).calibrated == width_space(model).calibrated
