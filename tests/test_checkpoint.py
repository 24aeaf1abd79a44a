"""Checkpoints: round trip with calibrated statistics, atomic writes, and corrupt-input errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from fake_stats import fake_calibrate, randomize_affine
from safetensors.torch import load_file, save_file

import usnet
from usnet import checkpoint
from usnet.checkpoint import load, read_info, read_meta, save, update_meta
from usnet.nn import width_space

WIDTHS = [0.35, 0.6, 1.0, {"stem": 0.5, "*": 0.8}]



@pytest.fixture
def model():
    torch.manual_seed(0)
    m = usnet.create_model("us_mobilenet_v2_small", num_classes=7)
    randomize_affine(m)
    fake_calibrate(m, WIDTHS)
    return m.eval()


@pytest.fixture
def ckpt(model, tmp_path) -> Path:
    return save(model, tmp_path / "run" / "ckpt", meta={"config": {"lr": 0.1}, "epoch": 3})


def test_round_trip_with_calibrated_statistics(model, ckpt) -> None:
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "usnet.json"]
    assert not [p for p in ckpt.parent.iterdir() if p.name != "ckpt"]  # no temporary leftovers
    loaded = load(ckpt)
    assert loaded.arch == "us_mobilenet_v2_small" and loaded.arch_kwargs == {"num_classes": 7}
    assert not loaded.training and usnet.get_width(loaded) == 1.0
    assert width_space(loaded).calibrated == width_space(model).calibrated
    assert len(width_space(loaded).calibrated) == len(WIDTHS)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        for w in WIDTHS:
            with usnet.width(model, w), usnet.width(loaded, w):
                assert torch.equal(model(x), loaded(x)), w
    info = read_info(ckpt)
    assert info["width_range"] == [0.35, 1.0]
    assert {"width": 0.6, "key": width_space(model).resolve(0.6)[1]} in info["calibrated"]
    assert any(isinstance(c["width"], dict) for c in info["calibrated"])
    assert info["versions"]["torch"] == torch.__version__
    assert read_meta(ckpt) == {"config": {"lr": 0.1}, "epoch": 3}


def test_a_loaded_model_calibrates_new_widths_and_saves_them(ckpt, tmp_path) -> None:
    loaded = load(ckpt)
    fake_calibrate(loaded, [0.45], seed=5)  # a width never seen before: no rebuild needed
    again = load(save(loaded, tmp_path / "more"))
    assert len(width_space(again).calibrated) == len(WIDTHS) + 1
    with torch.no_grad(), usnet.width(again, 0.45), usnet.width(loaded, 0.45):
        x = torch.randn(2, 1, 28, 28)
        assert torch.equal(again(x), loaded(x))
    # a model with no calibrated width at all also round-trips
    fresh = usnet.create_model("us_mobilenet_v1_small")
    assert width_space(load(save(fresh, tmp_path / "fresh"))).calibrated == {}


def test_meta_helpers(ckpt) -> None:
    assert update_meta(ckpt, metrics={"top1": 0.9}) == {
        "config": {"lr": 0.1},
        "epoch": 3,
        "metrics": {"top1": 0.9},
    }
    assert read_meta(ckpt / "usnet.json")["metrics"] == {"top1": 0.9}
    load(ckpt)  # the weights still match the updated JSON
    with pytest.raises(ValueError, match="JSON-serialisable"):
        update_meta(ckpt, bad=object())
    assert "bad" not in read_meta(ckpt)


def test_save_over_existing_keeps_other_files(model, ckpt) -> None:
    (ckpt / "resume.pt").write_bytes(b"state")
    save(model, ckpt, meta={"epoch": 4})
    assert (ckpt / "resume.pt").read_bytes() == b"state"
    assert read_meta(ckpt) == {"epoch": 4}
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors",
        "resume.pt",
        "usnet.json",
    ]


def test_interrupted_save_leaves_old_checkpoint(model, ckpt, monkeypatch, tmp_path) -> None:
    before = (ckpt / "model.safetensors").read_bytes(), (ckpt / "usnet.json").read_text()

    def crash(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save(model, ckpt, meta={"epoch": 99})
    with pytest.raises(KeyboardInterrupt):
        save(model, tmp_path / "new")
    monkeypatch.undo()
    after = (ckpt / "model.safetensors").read_bytes(), (ckpt / "usnet.json").read_text()
    assert after == before
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.safetensors", "usnet.json"]
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary folder left
    load(ckpt)


def _edit_json(ckpt: Path, **changes) -> None:
    doc = json.loads((ckpt / "usnet.json").read_text())
    doc.update(changes)
    (ckpt / "usnet.json").write_text(json.dumps(doc))


def _edit_weights(ckpt: Path, edit) -> None:
    file = ckpt / "model.safetensors"
    save_id = read_info(ckpt)["save_id"]
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"usnet_save_id": save_id})


def test_missing_files(ckpt, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere: no such checkpoint folder"):
        load(tmp_path / "nowhere")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors: missing"):
        load(ckpt)
    (ckpt / "usnet.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"usnet\.json: missing"):
        load(ckpt)


def test_corrupt_files(ckpt) -> None:
    weights, info = ckpt / "model.safetensors", ckpt / "usnet.json"
    good_json = info.read_text()
    info.write_text(good_json[: len(good_json) // 2])
    with pytest.raises(ValueError, match=r"usnet\.json: corrupt or truncated JSON"):
        load(ckpt)
    info.write_text(good_json.replace('"arch"', '"architecture"'))
    with pytest.raises(ValueError, match=r"usnet\.json: missing field 'arch'"):
        load(ckpt)
    info.write_text(good_json)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt or truncated safetensors"):
        load(ckpt)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt or truncated safetensors"):
        load(ckpt)


def test_weights_from_another_save_are_detected(model, ckpt, tmp_path) -> None:
    other = save(model, tmp_path / "other")
    (ckpt / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="belongs to a different save"):
        load(ckpt)


def test_unknown_model_and_wrong_arguments(ckpt) -> None:
    _edit_json(ckpt, arch="us_resnet_9000")
    with pytest.raises(ValueError, match=r"usnet\.json: unknown model 'us_resnet_9000'"):
        load(ckpt)
    _edit_json(ckpt, arch="us_mobilenet_v2_small", arch_kwargs={"num_classes": 10})
    with pytest.raises(
        ValueError, match=r"model\.safetensors: weights of the wrong shape.*classifier"
    ):
        load(ckpt)
    _edit_json(ckpt, arch_kwargs={"num_classes": 7}, format_version=99)
    with pytest.raises(ValueError, match="version 99 is not one this usnet reads"):
        load(ckpt)


def test_missing_unexpected_and_bad_statistics(ckpt) -> None:
    _edit_weights(ckpt, lambda t: t.pop("classifier.bias"))
    with pytest.raises(ValueError, match=r"model\.safetensors: .*missing weights classifier\.bias"):
        load(ckpt)
    _edit_weights(
        ckpt, lambda t: t.update({"classifier.bias": torch.zeros(7), "extra": torch.ones(1)})
    )
    with pytest.raises(ValueError, match="unexpected weights extra"):
        load(ckpt)
    key = width_space(usnet.create_model("us_mobilenet_v2_small")).resolve(0.6)[1]

    def drop_stats(t: dict) -> None:
        t.pop("extra")
        t.pop(f"features.0.1.stats_{key}")

    _edit_weights(ckpt, drop_stats)
    with pytest.raises(ValueError, match=r"statistics of features\.0\.1 for calibrated width 0\.6"):
        load(ckpt)


def test_save_needs_a_registered_model(tmp_path) -> None:
    from usnet.models.mobilenet_v1 import USMobileNetV1

    with pytest.raises(ValueError, match="build it with usnet.create_model"):
        save(USMobileNetV1(), tmp_path / "x")
    m = usnet.create_model("us_mobilenet_v1_small")
    with pytest.raises(ValueError, match="meta must be JSON-serialisable"):
        save(m, tmp_path / "y", meta={"f": lambda: 0})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_state_helpers(tmp_path) -> None:
    state = {"step": 7, "optimizer": {"momentum": [torch.ones(3)]}, "rng": torch.get_rng_state()}
    path = checkpoint.save_state(state, tmp_path / "resume.pt")
    back = checkpoint.load_state(path)
    assert back["step"] == 7 and torch.equal(back["optimizer"]["momentum"][0], torch.ones(3))
    torch.save({"f": _Pickled()}, tmp_path / "evil.pt")  # a class: refused, never unpickled
    with pytest.raises(ValueError, match=r"evil\.pt: not a readable state file"):
        checkpoint.load_state(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="no such state file"):
        checkpoint.load_state(tmp_path / "missing.pt")


class _Pickled:
    pass


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

    monkeypatch.setattr(checkpoint.os, "replace", cut_off)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(second, path)
    monkeypatch.setattr(checkpoint.os, "replace", real)
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

    monkeypatch.setattr(checkpoint, "recover", refuse)
    assert width_space(load(ckpt)).calibrated == width_space(model).calibrated


# -- what usnet.json asks for (issue 8, defect 11) ------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 10**12}, r"needs a tensor of shape \(1000000000000, 8\)"),
        ({"hidden": [10**9, 10**9]}, r"needs a tensor of shape \(1000000000, 784\)"),
        ({"hidden": "eight"}, r"do not build model 'us_mlp'"),
        ({"num_classes": 2.5}, r"do not build model 'us_mlp'"),
        ({"hidden": [-8]}, r"do not build model 'us_mlp'"),
    ],
)
def test_absurd_or_mistyped_model_arguments_are_refused_before_allocating(
    tmp_path, kwargs, message
) -> None:
    ckpt = save(usnet.create_model("us_mlp", hidden=[8]), tmp_path / "ckpt")
    _edit_json(ckpt, arch_kwargs={"hidden": [8], **kwargs})
    with pytest.raises(ValueError, match=r"usnet\.json: .*" + message):
        load(ckpt)


def test_a_checkpoint_path_under_a_file_is_a_clear_error(model, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"checkpoint '.*file/ckpt': '.*file' is a file"):
        save(model, tmp_path / "file" / "ckpt")
    with pytest.raises(ValueError, match="exists and is not a checkpoint folder"):
        save(model, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
