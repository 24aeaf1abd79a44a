"""Which networks ``usnet.convert`` slims: the torchvision classification zoo, a timm sample and
hand-written CIFAR-style networks (``zoo:NAME``, benchmarks/convert_zoo.py).

    python benchmarks/convert_coverage.py                      # all (hours on one CPU thread)
    python benchmarks/convert_coverage.py --only torchvision:resnet18 zoo:dpn

Each model runs in its own process (one thread, a time limit): built with random weights (no
download), batch-norm parameters and running statistics randomised so the checks mean something,
eval mode, float32, a 64 px input (the model's own size where it needs one). It is converted
(width range [0.25, 1.0]); the record holds the refusal message, or the channel groups, MACs at
1.0 and 0.25, the max abs difference to the original at width 1.0, and the max abs difference
between the US model and its dense export (``usnet.export.extract``) at a random width after
calibrating that width on two random batches (``single_pass``: one forward; the estimator does
not matter for this check), and the *oracle*: the max abs difference at the narrowest width
between the US model and the original network with the channels that width drops zeroed
(``usnet.convert.oracle``; batch norms on batch statistics, float64), which shares no code with
the converted layers ("n/a" where a forward computes over the channels, e.g. layer norm; not
run for networks of more than 150 M parameters, whose float64 copies would not fit). A
refused model is converted again with ``keep="auto"`` and the share of its MACs that then
slims is recorded; so is the share of a converted one's (100 % unless ``convert`` warned).
Results accumulate in ``--records`` (JSON lines, so an interrupted run resumes) and the table
replaces the block between the markers in ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # convert_zoo
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
SHARE = re.compile(r"([\d.<>]+) % of \w+'s MACs slim")


def names() -> list[str]:
    import torchvision
    from convert_zoo import ZOO

    tv = torchvision.models.list_models(module=torchvision.models)
    timm = [f"timm:{n}" for n in TIMM_SAMPLE]
    return [f"torchvision:{n}" for n in tv] + timm + [f"zoo:{n}" for n in ZOO]


def is_attention(name: str) -> bool:
    return name.partition(":")[2].startswith(ATTENTION)


# -- one model (in a child process) -----------------------------------------------------------
def measure(name: str, side: int, seed: int = 0) -> dict:
    import warnings

    import torch
    from torch import nn

    import usnet
    from usnet.convert import ConvertError
    from usnet.convert.oracle import difference
    from usnet.convert.plan import Plan
    from usnet.export import extract

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    source, _, model_name = name.partition(":")
    if source == "torchvision":
        import torchvision

        net = torchvision.models.get_model(model_name, weights=None)
    elif source == "zoo":
        from convert_zoo import ZOO

        net, side = ZOO[model_name](), 32
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
        model, record["share"] = _converted(net, x, ())
    except ConvertError as e:
        record.update(status="refused", message=str(e).splitlines()[0], problems=len(e.problems))
        record["first"] = f"{e.problems[0].op}: {e.problems[0].problem}"
        try:
            record["auto_share"] = _converted(net, x, "auto")[1]
        except Exception as e2:
            record["auto_error"] = f"{type(e2).__name__}: {e2}"[:300]
        return record
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
    if Plan.from_json(model.conversion["plan"]).over_channels:
        record["oracle"] = None  # zeros would count where a forward computes over channels
    elif sum(p.numel() for p in net.parameters()) > 150e6:
        record["oracle"] = "too large"  # three float64 copies would not fit this machine
    else:
        original, slim = copy.deepcopy(net).double(), copy.deepcopy(model).double()
        record["oracle"] = difference(original, slim, x.double(), 0.25)
    record["status"] = "converted"
    return record


def _converted(net, x, keep):  # noqa: ANN001, ANN202
    """The converted model and the share of MACs that slims (from the note convert warns)."""
    import warnings

    from usnet.convert import convert

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = convert(net, x, (0.25, 1.0), keep=keep)
    notes = [m for w in caught if (m := SHARE.search(str(w.message)))]
    share = notes[0].group(1) if notes else "100"
    return model, ("0" if "nothing of" in " ".join(str(w.message) for w in caught) else share)


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
    def of(prefix: str) -> list[dict]:
        return [r for r in records if r["model"].startswith(prefix)]

    cnn = [r for r in of("torchvision:") if not is_attention(r["model"])]
    ok = [r for r in cnn if _slims(r)]
    exact = [r for r in ok if r["diff_full"] <= 1e-4 and r["diff_dense"] <= 1e-4]
    checked = [r for r in records if r["status"] == "converted" and _number(r.get("oracle"))]
    agree = [r for r in checked if r["oracle"] <= 1e-6]
    lines = [
        f"torchvision CNNs (attention models aside): **{len(ok)} of {len(cnn)} convert** "
        f"({100 * len(ok) / max(len(cnn), 1):.0f} %), {len(exact)} of them exact (max abs "
        f"difference <= 1e-4 at width 1.0 and against the dense export); timm sample: "
        f"{sum(map(_slims, of('timm:')))} of {len(of('timm:'))} convert; hand-written networks: "
        f"{sum(map(_slims, of('zoo:')))} of {len(of('zoo:'))}. The oracle (the masked original "
        f"at width 0.25) agrees within 1e-6 for {len(agree)} of the {len(checked)} converted "
        "networks it applies to.",
    ]
    for title, prefix in (("torchvision", "torchvision:"), ("timm sample", "timm:"),
                          ("hand-written CIFAR-style networks", "zoo:")):  # fmt: skip
        lines += [
            "",
            f"**{title}**",
            "",
            "| model | result | groups | MACs that slim | MACs 1.0 | MACs 0.25 | max abs diff "
            "1.0 | dense (width) | oracle (0.25) | seconds |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [_row(r) for r in of(prefix)]
    return "\n".join(lines)


def _row(r: dict) -> str:
    name = r["model"] + (" (attention)" if is_attention(r["model"]) else "")
    if r["status"] == "converted":
        result = "converted" if r["groups"] else "converted, but no group slims"
        value = r.get("oracle")
        oracle = f"{value:.1e}" if _number(value) else "n/a" if value is None else str(value)
        return (
            f"| {name} | {result} | {r['groups']} | {r.get('share', '?')} % | "
            f"{r['macs_full'] / 1e6:.1f} M | {r['macs_min'] / 1e6:.1f} M | "
            f"{r['diff_full']:.1e} | {r['diff_dense']:.1e} ({r['width']:g}) | {oracle} | "
            f"{r.get('seconds', 0):.0f} |"
        )
    if r["status"] == "refused":
        n = r.get("problems", 1)
        auto = (
            f'; keep="auto": {r["auto_share"]} % of the MACs slim'
            if "auto_share" in r
            else f'; keep="auto" fails: {r.get("auto_error", "?")}'
        )
        text = f"refused ({n} problem{'s' if n > 1 else ''}): {r.get('first', r['message'])}{auto}"
    else:
        text = f"{r['status']}: {r.get('message', '')}"
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"| {name} | {text} | | | | | | | | |"


def _number(v: object) -> bool:
    return isinstance(v, (int, float))


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
