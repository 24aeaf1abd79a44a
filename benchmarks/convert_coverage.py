"""Which networks ``usnet.convert`` slims: the torchvision classification zoo and a timm sample.

    python benchmarks/convert_coverage.py                      # all (hours on one CPU thread)
    python benchmarks/convert_coverage.py --only torchvision:resnet18 timm:resnet26d

Each model runs in its own process (one thread, a time limit): built with random weights (no
download), batch-norm parameters and running statistics randomised so the checks mean something,
eval mode, float32, a 64 px input (the model's own size where it needs one). It is converted
(width range [0.25, 1.0]); the record holds the refusal message, or the channel groups, MACs at
1.0 and 0.25, the max abs difference to the original at width 1.0, and the max abs difference
between the US model and its dense export (``usnet.export.extract``) at a random width after
calibrating that width on two random batches (``single_pass``: one forward; the estimator does
not matter for this check). Results accumulate in ``--records`` (JSON lines, so an interrupted
run resumes) and the table replaces the block between the markers in ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"
#: timm CNNs: plain, bottleneck, grouped, depthwise, SE, dense, multi-branch, re-parameterisable,
#: channels-last norms; some are expected to be refused (channel splits, custom convs).
TIMM_SAMPLE = (
    "resnet18", "resnet26d", "resnet50d", "seresnext26d_32x4d", "resnext26ts", "resnetv2_50",
    "efficientnet_b0", "efficientnet_lite0", "tf_efficientnet_b0", "efficientnetv2_rw_t",
    "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100", "mnasnet_100",
    "fbnetc_100", "spnasnet_100", "lcnet_050", "tinynet_a", "ghostnet_100", "mixnet_s",
    "regnetx_002", "regnety_002", "densenet121", "dla34", "dpn68", "hrnet_w18_small",
    "cspresnet50", "res2net50_14w_8s", "rexnet_100", "selecsls42b", "convnext_atto",
    "repvgg_a0", "gernet_s", "vgg11_bn", "skresnet18", "ecaresnet26t", "nf_resnet26",
    "xception41", "inception_v3", "levit_128s",
)  # fmt: skip
ATTENTION = ("vit_", "swin_", "maxvit_", "levit_")


def names() -> list[str]:
    import torchvision

    zoo = torchvision.models.list_models(module=torchvision.models)
    return [f"torchvision:{n}" for n in zoo] + [f"timm:{n}" for n in TIMM_SAMPLE]


def is_attention(name: str) -> bool:
    return name.partition(":")[2].startswith(ATTENTION)


# -- one model (in a child process) -----------------------------------------------------------
def measure(name: str, side: int, seed: int = 0) -> dict:
    import warnings

    import torch
    from torch import nn

    import usnet
    from usnet.convert import ConvertError, convert
    from usnet.export import extract

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    source, _, model_name = name.partition(":")
    if source == "torchvision":
        import torchvision

        net = torchvision.models.get_model(model_name, weights=None)
    else:
        import timm

        net = timm.create_model(model_name, pretrained=False)
    net.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None  # tracked together with running_mean
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.affine:
                    m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    record: dict = {"model": name}
    x = None
    for s in (side, _default_side(net)):
        x = torch.randn(2, 3, s, s, generator=g)
        try:
            with torch.no_grad():
                net(x)
            break
        except Exception as e:  # too small for this model: its own size
            x, record["input_error"] = None, f"{type(e).__name__}: {e}"[:200]
    if x is None:
        return {**record, "status": "error", "message": record.pop("input_error")}
    record["input"] = int(x.shape[-1])
    start = time.perf_counter()
    try:
        model = convert(net, x, (0.25, 1.0))
    except ConvertError as e:
        return {**record, "status": "refused", "message": str(e)}
    except Exception as e:
        return {**record, "status": "error", "message": f"{type(e).__name__}: {e}"[:500]}
    record["convert_s"] = time.perf_counter() - start
    space = usnet.nn.width_space(model)
    record["groups"] = len(space.groups)
    record["macs_full"] = usnet.macs(model, 1.0)
    record["macs_min"] = usnet.macs(model, 0.25)
    with torch.no_grad():
        record["diff_full"] = _max_diff(net(x), model(x))
    w = round(random.Random(seed).uniform(0.25, 1.0), 3)
    record["width"] = w
    batches = [torch.randn(4, 3, s, s, generator=g) for _ in range(2)]
    usnet.calibrate(model, batches, widths=[w], method="single_pass")
    model.eval()
    dense = extract(model, w)
    with torch.no_grad(), usnet.width(model, w):
        record["diff_dense"] = _max_diff(model(x), dense(x))
    record["status"] = "converted"
    return record


def _default_side(net) -> int:  # noqa: ANN001
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if "input_size" in cfg:
        return int(cfg["input_size"][-1])
    return 299 if type(net).__name__ == "Inception3" else 224


def _max_diff(a, b) -> float:  # noqa: ANN001
    import torch

    ta = [a] if isinstance(a, torch.Tensor) else [t for t in a if isinstance(t, torch.Tensor)]
    tb = [b] if isinstance(b, torch.Tensor) else [t for t in b if isinstance(t, torch.Tensor)]
    return max(float((p - q).abs().max()) for p, q in zip(ta, tb, strict=True))


# -- the driver -------------------------------------------------------------------------------
def run_one(name: str, side: int, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, __file__, "--child", name, "--side", str(side)]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "timeout", "message": f"over {timeout:.0f} s"}
    seconds = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "status": "error", "message": tail[:300], "seconds": seconds}
    return {**json.loads(lines[-1]), "seconds": seconds}


def table(records: list[dict]) -> str:
    tv = [r for r in records if r["model"].startswith("torchvision:")]
    cnn = [r for r in tv if not is_attention(r["model"])]
    ok = [r for r in cnn if _slims(r)]
    exact = [r for r in ok if r["diff_full"] <= 1e-4 and r["diff_dense"] <= 1e-4]
    timm_ok = [r for r in records if r["model"].startswith("timm:") and _slims(r)]
    timm_all = [r for r in records if r["model"].startswith("timm:")]
    lines = [
        f"torchvision CNNs (attention models aside): **{len(ok)} of {len(cnn)} convert** "
        f"({100 * len(ok) / max(len(cnn), 1):.0f} %), {len(exact)} of them exact (max abs "
        f"difference <= 1e-4 at width 1.0 and against the dense export); timm sample: "
        f"{len(timm_ok)} of {len(timm_all)} convert.",
        "",
        "| model | result | groups | input | MACs 1.0 | MACs 0.25 | max abs diff 1.0 "
        "| max abs diff dense (width) | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        name = r["model"] + (" (attention)" if is_attention(r["model"]) else "")
        if r["status"] == "converted":
            result = "converted" if r["groups"] else "converted, but no group slims"
            lines.append(
                f"| {name} | {result} | {r['groups']} | {r['input']} | "
                f"{r['macs_full'] / 1e6:.1f} M | {r['macs_min'] / 1e6:.1f} M | "
                f"{r['diff_full']:.1e} | {r['diff_dense']:.1e} ({r['width']:g}) | "
                f"{r.get('seconds', 0):.0f} |"
            )
        else:
            message = r.get("message", "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {name} | {r['status']}: {message} | | | | | | | |")
    return "\n".join(lines)


def _slims(record: dict) -> bool:
    return record["status"] == "converted" and record["groups"] > 0


def write_block(path: Path, block: str) -> None:
    text = path.read_text() if path.is_file() else f"# Coverage\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    path.write_text(head + START + "\n" + block + "\n" + END + rest.split(END, 1)[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="SOURCE:NAME", help="these models only")
    p.add_argument("--side", type=int, default=64, help="input side in pixels (default 64)")
    p.add_argument("--timeout", type=float, default=420.0, help="seconds per model")
    p.add_argument("--records", type=Path, default=ROOT / "runs/convert_coverage.jsonl")
    p.add_argument("--out", type=Path, default=ROOT / "docs/convert.md")
    p.add_argument("--child", metavar="SOURCE:NAME", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.side)))
        return 0
    args.records.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.records.is_file():
        done = {json.loads(ln)["model"]: json.loads(ln) for ln in args.records.open()}
    todo = args.only or names()
    for i, name in enumerate(todo):
        if name not in done:
            done[name] = run_one(name, args.side, args.timeout)
            with args.records.open("a") as f:
                f.write(json.dumps(done[name]) + "\n")
        r = done[name]
        print(
            f"[{i + 1}/{len(todo)}] {name}: {r['status']} {r.get('message', '')[:120]}", flush=True
        )
    records = [done[n] for n in todo]
    from usnet.profile import device_name

    stamp = datetime.date.today().isoformat()
    head = (
        f"Generated by `python benchmarks/convert_coverage.py` on {stamp} ({device_name()}, "
        f"1 thread per model, {args.side} px unless the model needs its own size, time limit "
        f"{args.timeout:.0f} s per model).\n\n"
    )
    write_block(args.out, head + table(records))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
