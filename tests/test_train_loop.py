"""The one trainer end to end on a generated Fashion-MNIST folder: CLI, resume, DDP, and the
one calibration subset of a run (the trainer's and the commands')."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from fixtures import write_fashion_mnist

from usnet import checkpoint
from usnet.cli import main
from usnet.config import build_config, dump_yaml
from usnet.tasks import load_config, task_config
from usnet.tasks.classification import TASK, TrainConfig
from usnet.tasks.classification.data import build_model
from usnet.training import train
from usnet.training.resume import CHECKPOINT, RESUME, config_changes

TINY = {"input_size": 28, "blocks": [[1, 8, 1, 1], [6, 16, 1, 2]], "last_channels": 32}


def _cfg(tmp_path: Path, data: Path, *overrides: str) -> TrainConfig:
    raw = {
        "model": {"name": "us_mobilenet_v2_small", "kwargs": TINY},
        "data": {"root": str(data), "batch_size": 32, "val_batch_size": 64, "augment": True},
        "train": {"epochs": 2, "max_steps_per_epoch": 3, "log_every": 1},
        "optim": {"lr": 0.05},
        "calibrate": {"num_samples": 64, "batch_size": 32},
        "eval": {"widths": "0.35,1.0"},
        "output": {"dir": str(tmp_path / "run")},
    }
    return build_config(TrainConfig, raw, list(overrides))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=256, n_test=64)


def test_cli_train_then_calibrate_a_new_width(tmp_path, data, capsys):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        json.dumps(
            {
                "model": {"name": "us_mobilenet_v2_small", "kwargs": TINY},
                "data": {"root": str(data), "batch_size": 32, "augment": False},
                "train": {"epochs": 3},
                "calibrate": {"num_samples": 64},
                "eval": {"widths": "0.35:1.0:0.325"},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    assert main(["train", str(cfg_file), "--set", "optim.lr=0.2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| width | MACs | top-1 accuracy (%) |" in out and "| 0.35 |" in out
    ckpt = tmp_path / "run" / "checkpoint"
    meta = checkpoint.read_meta(ckpt)
    # the checkpoint holds the validated config, which reloads into the same typed config
    assert task_config(meta["config"]) == load_config(cfg_file, ["optim.lr=0.2"])
    assert [r["width"] for r in meta["results"]] == [0.35, 0.675, 1.0]
    assert meta["results"][-1]["top1"] > 0.3  # learnable fixture: well above chance (0.1)
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,")
    assert main(["calibrate", str(ckpt), "--widths", "0.5,0.8"]) == 0
    model = checkpoint.load(ckpt)
    from usnet.calibration import is_calibrated

    assert is_calibrated(model, 0.8) and is_calibrated(model, 0.35)
    assert main(["train", str(cfg_file), "--set", "optim.lrr=1"]) == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err


def _resume_state(run: Path) -> dict:
    return checkpoint.load_state(run / RESUME)


def test_killed_run_resumes_to_the_same_weights(tmp_path, data, monkeypatch):
    full = train(TASK, _cfg(tmp_path / "a", data)).checkpoint
    expected = _resume_state(full.parent)["model"]

    # Crash right after the first epoch's resume state is written.
    cfg = _cfg(tmp_path / "b", data)
    real = checkpoint.save_state

    def crash_after(obj, path):
        real(obj, path)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoint, "save_state", crash_after)
    with pytest.raises(KeyboardInterrupt):
        train(TASK, cfg)
    monkeypatch.setattr(checkpoint, "save_state", real)
    assert _resume_state(tmp_path / "b" / "run")["counters"]["epoch"] == 1
    train(TASK, cfg, resume=True)
    got = _resume_state(tmp_path / "b" / "run")["model"]
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_crash_between_checkpoint_and_resume_state_resumes_consistently(
    tmp_path, data, monkeypatch, caplog
):
    """Defect 6: the epoch-2 checkpoint is written, then the run dies before resume.pt; the
    resumed run must not pair epoch-2 weights with epoch-1 optimizer state."""
    full = train(TASK, _cfg(tmp_path / "a", data)).checkpoint
    expected = _resume_state(full.parent)["model"]
    cfg = _cfg(tmp_path / "b", data)
    real, calls = checkpoint.save_state, []

    def die_before_second(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the checkpoint and resume.pt")
        real(obj, path)

    monkeypatch.setattr(checkpoint, "save_state", die_before_second)
    with pytest.raises(KeyboardInterrupt):
        train(TASK, cfg)
    monkeypatch.setattr(checkpoint, "save_state", real)
    run = tmp_path / "b" / "run"
    assert checkpoint.read_meta(run / CHECKPOINT)["epoch"] == 2
    assert _resume_state(run)["counters"]["epoch"] == 1
    with caplog.at_level(logging.WARNING, logger="usnet"):
        train(TASK, cfg, resume=True)
    assert "is not the checkpoint saved with" in caplog.text
    got = _resume_state(run)["model"]
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_a_checkpoint_calibrated_since_is_still_the_one_resume_pt_was_saved_with(
    tmp_path, data, caplog
):
    """``usnet calibrate`` on a run's checkpoint adds statistics, not weights: a longer run
    resumes from it without claiming a crash came between the two writes."""
    train(TASK, _cfg(tmp_path, data, "train.epochs=1"))
    ckpt = tmp_path / "run" / CHECKPOINT
    before = checkpoint.read_info(ckpt)
    assert main(["calibrate", str(ckpt), "--widths", "0.6"]) == 0
    after = checkpoint.read_info(ckpt)
    assert after["save_id"] != before["save_id"]  # a new save ...
    assert checkpoint.weights_id(after) == checkpoint.weights_id(before)  # ... of the same weights
    with caplog.at_level(logging.WARNING, logger="usnet"):
        train(TASK, _cfg(tmp_path, data, "train.epochs=2"), resume=True)
    assert "is not the checkpoint saved with" not in caplog.text
    assert checkpoint.weights_id(checkpoint.read_info(ckpt)) != checkpoint.weights_id(after)


def test_resume_with_another_model_or_optimizer_names_the_fields(tmp_path, data, capsys):
    """Defect 11: one line naming what differs, not a state-dict traceback."""
    cfg = _cfg(tmp_path, data, "train.epochs=1")
    train(TASK, cfg)
    changed = _cfg(
        tmp_path, data, "train.epochs=2", "optim.name=adamw", "model.kwargs.last_channels=64"
    )
    with pytest.raises(ValueError) as info:
        train(TASK, changed, resume=True)
    msg = str(info.value)
    assert "\n" not in msg and "cannot resume" in msg
    assert "model.kwargs.last_channels (32 -> 64)" in msg and "optim.name ('sgd' -> 'adamw')" in msg
    assert "train.epochs" not in msg  # a longer run may continue
    train(TASK, _cfg(tmp_path, data, "train.epochs=2"), resume=True)
    assert _resume_state(tmp_path / "run")["counters"]["epoch"] == 2


def test_a_run_cut_off_in_its_final_evaluation_resumes_to_evaluate_only(
    tmp_path, data, monkeypatch
):
    """All epochs trained, the final evaluation killed: --resume evaluates (no refusal, no
    retraining); once it has results, resuming again is refused."""
    from usnet.training import trainer

    cfg = _cfg(tmp_path, data, "train.epochs=1")
    real, calls = trainer.evaluate_widths, []

    def killed_in_the_final_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the epoch's end widths first, then the final grid
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_widths", killed_in_the_final_one)
    with pytest.raises(KeyboardInterrupt):
        train(TASK, cfg)
    ckpt = tmp_path / "run" / "checkpoint"
    assert "results" not in checkpoint.read_meta(ckpt)
    weights = {k: v.clone() for k, v in checkpoint.load(ckpt).state_dict().items()}
    monkeypatch.setattr(trainer, "evaluate_widths", real)
    train(TASK, cfg, resume=True)
    meta = checkpoint.read_meta(ckpt)
    assert meta["results"] and meta["epoch"] == 1 and len(meta["history"]) == 1
    for k, v in checkpoint.load(ckpt).state_dict().items():
        if "stats_" not in k:  # calibrated statistics are added; the weights are not retrained
            torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"already finished 1 epochs \(train.epochs 1\)"):
        train(TASK, cfg, resume=True)


def test_resuming_with_fewer_epochs_than_trained_is_refused(tmp_path, data):
    """A run with 2 epochs done, resumed with train.epochs=1, must not 'evaluate only' and
    record itself as a 1-epoch run with a 2-epoch history."""
    train(TASK, _cfg(tmp_path, data, "train.epochs=2"))
    with pytest.raises(ValueError, match=r"already finished 2 epochs \(train.epochs 1\)"):
        train(TASK, _cfg(tmp_path, data, "train.epochs=1"), resume=True)


def test_config_changes_name_only_the_changed_leaves():
    """An argument added to empty ``model.kwargs`` is one change, not also ``{} -> (unset)``."""
    saved = {"model": {"name": "m", "kwargs": {}}, "optim": {"lr": 0.1}}
    current = {"model": {"name": "m", "kwargs": {"last_channels": 64}}, "optim": {"lr": 0.1}}
    assert config_changes(saved, current) == ["model.kwargs.last_channels ('(unset)' -> 64)"]
    assert config_changes(current, current) == []


def test_resume_reads_its_state_on_the_cpu_and_restores_the_saved_rng(tmp_path, data, monkeypatch):
    """resume.pt is read onto the CPU whatever the training device (RNG states must reach
    torch.set_rng_state as CPU byte tensors; map_location=cuda broke it), and the RNG state it
    holds is the one restored."""
    cfg = _cfg(tmp_path, data, "train.epochs=2")
    train(TASK, _cfg(tmp_path, data, "train.epochs=1"))
    saved = _resume_state(tmp_path / "run")["rng"]["torch"]
    seen, real = [], checkpoint.load_state

    def spy(path, map_location="cpu"):
        seen.append(map_location)
        return real(path, map_location)

    monkeypatch.setattr(checkpoint, "load_state", spy)
    set_rng, states = torch.set_rng_state, []
    monkeypatch.setattr(torch, "set_rng_state", lambda s: (states.append(s.clone()), set_rng(s)))
    train(TASK, cfg, resume=True)
    assert seen == ["cpu"]
    assert len(states) == 1 and torch.equal(states[0], saved)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_resumes_on_cuda(tmp_path, data):
    """The CUDA case itself: a run trained on the GPU resumes there."""
    train(TASK, _cfg(tmp_path, data, "train.epochs=1"), device="cuda")
    result = train(TASK, _cfg(tmp_path, data, "train.epochs=2"), resume=True, device="cuda")
    assert checkpoint.read_meta(result.checkpoint)["epoch"] == 2


def test_a_finished_run_is_not_overwritten(tmp_path, data, capsys):
    """Defect 10: training again into a run's folder without --resume is refused."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(dump_yaml(_cfg(tmp_path, data, "train.epochs=1")))
    args = ["train", str(cfg_file), "--no-progress"]
    assert main(args) == 0
    ckpt = tmp_path / "run" / CHECKPOINT
    before = checkpoint.read_info(ckpt)["save_id"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "run") in err
    assert "--resume" in err and "output.dir" in err and "--overwrite" in err
    assert checkpoint.read_info(ckpt)["save_id"] == before  # untouched
    assert main([*args, "--overwrite"]) == 0
    assert checkpoint.read_info(ckpt)["save_id"] != before


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now (held open together while they are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


_COMMON = (
    "model.name=us_mlp",
    "model.kwargs={hidden: [32, 32]}",
    "eval.widths=[0.25, 1.0]",
    "optim.weight_decay=0.001",
)
_GRID = [0.35, 0.5, 0.75, 1.0]


def _ddp_worker(
    rank: int, world: int, ports: list[int], cfgs: list[TrainConfig], logs: Path
) -> None:
    """Train each config on 2 gloo ranks (a fresh rendezvous port for each run), recording the
    widths each rank evaluates."""
    from usnet.spectrum import MetricProvider

    os.environ.update(
        MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    real, log = MetricProvider.measure, {}

    def recording(self, model, widths):
        with open(log["file"], "a") as f:
            f.write(" ".join(f"{w:g}" for w in widths) + "\n")
        return real(self, model, widths)

    MetricProvider.measure = recording  # type: ignore[method-assign]
    for cfg, port in zip(cfgs, ports, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        log["file"] = logs / f"{Path(cfg.output.dir).parent.name}.rank{rank}"
        train(TASK, cfg, device="cpu")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, data) -> Path:
    """One 2-process gloo job (process start-up is most of its cost) training two runs: ``two``
    (us_mlp, no BN) and ``grid`` (BN, a 4-width grid, 1 epoch)."""
    root = tmp_path_factory.mktemp("ddp")
    cfgs = [
        _cfg(root / "two", data, *_COMMON),
        _cfg(root / "grid", data, "train.epochs=1", f"eval.widths={_GRID}"),
    ]
    ports = _free_ports(len(cfgs))
    mp.spawn(_ddp_worker, args=(2, ports, cfgs, root), nprocs=2, join=True)
    return root


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, data, ddp_runs):
    """No BN (us_mlp): 2 ranks x 16 images must give the weights of 1 rank x 32 images."""
    single = train(TASK, _cfg(tmp_path / "one", data, *_COMMON), device="cpu").checkpoint
    a = checkpoint.load_state(single.parent / RESUME)["model"]
    b = checkpoint.load_state(ddp_runs / "two" / "run" / RESUME)["model"]
    moved = 0.0
    init = build_model(_cfg(tmp_path, data, *_COMMON)).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
        moved = max(moved, (a[k] - init[k]).abs().max().item())
    assert moved > 1e-3  # training did change the weights


def test_ddp_ranks_share_the_width_grid(ddp_runs, data):
    """Defect 7: each rank calibrates and evaluates its share of the widths; rank 0's
    checkpoint holds every width's results and statistics, equal to one process's."""
    from usnet.calibration import calibrate, clear_calibration, is_calibrated
    from usnet.data import calibration_loader

    logs = [(ddp_runs / f"grid.rank{r}").read_text().splitlines() for r in (0, 1)]
    assert logs[0] == ["0.35", "0.35 0.75"] and logs[1] == ["1", "0.5 1"]  # epoch end, final
    ckpt = ddp_runs / "grid" / "run" / CHECKPOINT
    assert [r["width"] for r in checkpoint.read_meta(ckpt)["results"]] == _GRID
    shared = checkpoint.load(ckpt)
    assert all(is_calibrated(shared, w) for w in _GRID)
    alone = checkpoint.load(ckpt)
    clear_calibration(alone)
    cfg = _cfg(ddp_runs / "grid", data, "train.epochs=1", f"eval.widths={_GRID}")
    images = calibration_loader("fashion_mnist", data, 64, 32, seed=cfg.train.seed)
    calibrate(alone, images, _GRID, cfg.calibrate.num_samples)
    a, b = shared.state_dict(), alone.state_dict()
    assert a.keys() == b.keys() and any("stats_" in k for k in a)
    for k in a:  # the ranks calibrated a channels-last model: float32 sums in another order
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)


def test_cuda_rng_states_of_more_gpus_than_present_restore_the_present_ones(monkeypatch):
    """A run saved on 8 GPUs resumed on 1: set_rng_state_all would index a missing device."""
    from usnet.training import resume

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]
    resume._set_rng_state({"torch": torch.get_rng_state(), "cuda": states})
    assert len(restored) == 1 and torch.equal(restored[0], states[0])
