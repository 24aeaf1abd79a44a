"""A stand-in for the ``usnet`` command in the study runner's tests: writes what ``usnet train``
and ``usnet spectrum`` write (run folder, checkpoint metadata, resume state, spectrum.json) in
a fraction of a second, without importing torch.

Environment: ``FAKE_TEMPLATE`` a real checkpoint folder whose weights it copies;
``FAKE_CALLS`` a file it appends ``COMMAND RUN MODE START_EPOCH PID`` lines to (and
``end RUN`` when a training finishes);
``FAKE_EPOCH_SECONDS`` sleep per epoch; ``FAKE_FAIL`` a run name whose training fails (exit 1),
or ``spectrum RUN`` for its spectrum;
``FAKE_REJECT`` a flag it does not know (argparse's exit 2);
``FAKE_CTRL_C`` ``RUN EPOCH``: that run's training, on reaching EPOCH (0 = before the first),
acts as a Ctrl-C in the terminal: SIGINT to the runner (its parent) and exit 130 as usnet does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import yaml


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _widths(text: str) -> list[float]:
    if ":" in text:
        a, b, step = (float(x) for x in text.split(":"))
        return [round(a + i * step, 6) for i in range(int((b - a) / step + 1e-6) + 1)]
    return [float(x) for x in text.split(",")]


def _top1(cfg: dict, w: float) -> float:
    return round(0.5 + 0.01 * cfg["train"]["epochs"] + 0.2 * w + 0.001 * cfg["train"]["seed"], 6)


def train(args: list[str]) -> int:
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    values = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}
    out = Path(values["output.dir"])
    cfg = {
        "model": {"name": "us_mobilenet_v2_small"},
        "train": {"epochs": 4, "sampling": "sandwich", "num_widths": 4, "widths": None,
                  "inplace_distillation": True, "label_smoothing": 0.0, "seed": 0},
        "optim": {"lr": 0.2},
    }  # fmt: skip
    for key, value in values.items():
        section, _, name = key.partition(".")
        if section in cfg and name in cfg[section]:
            cfg[section][name] = value
    epochs, resume = cfg["train"]["epochs"], "--resume" in args
    start = json.loads((out / "resume.pt").read_text())["epoch"] if resume else 0
    with open(os.environ["FAKE_CALLS"], "a") as f:
        mode = "resume" if resume else "fresh"
        f.write(f"train {out.name} {mode} {start} {os.getpid()}\n")
    if os.environ.get("FAKE_FAIL") == out.name:
        print("RuntimeError: the fake run failed as asked", flush=True)
        return 1
    ckpt = out / "checkpoint"
    if start >= epochs:  # as usnet train: a finished run is refused, a cut-off one evaluates
        info = json.loads((ckpt / "usnet.json").read_text())
        if "results" in info["meta"]:
            print(f"usnet train: error: {out} already finished {start} epochs (train.epochs {epochs})")
            return 1
    else:
        info = json.loads((Path(os.environ["FAKE_TEMPLATE"]) / "usnet.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    template = Path(os.environ["FAKE_TEMPLATE"])
    history = json.loads((out / "history.json").read_text()) if resume else []
    for epoch in range(start, epochs):
        if os.environ.get("FAKE_CTRL_C") == f"{out.name} {epoch}":
            os.kill(os.getppid(), signal.SIGINT)
            print("usnet train: interrupted", flush=True)
            return 130
        time.sleep(float(os.environ.get("FAKE_EPOCH_SECONDS", "0")))
        history.append({"epoch": epoch + 1, "images_per_s": 1000.0, "seconds": 1.28})
        _atomic(out / "history.json", json.dumps(history))
        lines = ["epoch,seconds,images_per_s", *(f"{h['epoch']},1.28,1000.0" for h in history)]
        _atomic(out / "metrics.csv", "\n".join(lines) + "\n")
        _atomic(out / "resume.pt", json.dumps({"epoch": epoch + 1}))
        ckpt.mkdir(exist_ok=True)
        shutil.copy(template / "model.safetensors", ckpt / "model.safetensors")
        info["meta"] = {"config": cfg, "epoch": epoch + 1, "history": history}
        _atomic(ckpt / "usnet.json", json.dumps(info))
        print(f"epoch={epoch + 1} seconds=1.28", flush=True)
    if cfg["train"]["sampling"] == "fixed":
        widths = cfg["train"]["widths"]
    else:
        widths = [0.35, 1.0]
    info["meta"]["results"] = [
        {"width": w, "top1": _top1(cfg, w), "top5": 0.99, "loss": 0.5} for w in widths
    ]
    _atomic(ckpt / "usnet.json", json.dumps(info))
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(f"end {out.name}\n")
    return 0


def spectrum(args: list[str]) -> int:
    ckpt = Path(args[0])
    cfg = json.loads((ckpt / "usnet.json").read_text())["meta"]["config"]
    out = Path(args[args.index("--out") + 1])
    with open(os.environ["FAKE_CALLS"], "a") as f:
        f.write(f"spectrum {ckpt.parent.name} widths 0 {os.getpid()}\n")
    if os.environ.get("FAKE_FAIL") == f"spectrum {ckpt.parent.name}":
        print("usnet spectrum: error: failed as asked")
        return 1
    rows = [
        {"width": w, "macs": 1000, "metrics": {"top1": _top1(cfg, w), "top5": 0.99, "loss": 0.5}}
        for w in _widths(args[args.index("--widths") + 1])
    ]
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "spectrum.json", json.dumps({"rows": rows}))
    return 0


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    reject = os.environ.get("FAKE_REJECT")
    if reject and reject in args:
        print(
            f"usage: usnet {command} ...\nusnet {command}: error: unrecognized arguments: {reject}"
        )
        return 2
    return train(args) if command == "train" else spectrum(args)


if __name__ == "__main__":
    sys.exit(main())
