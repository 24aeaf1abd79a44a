"""Which attention models ``usnet.convert`` slims: torchvision's and a timm sample (ViT, DeiT, Swin,
BEiT, MLP-Mixer, hybrids), and a user's ``nn.TransformerEncoder`` text classifier.

    python benchmarks/convert_transformers.py                  # all (about 15 min on one thread)
    python benchmarks/convert_transformers.py --only timm:vit_tiny_patch16_224

Each model runs in its own process (one thread, a time limit), built with random weights (no
download) moved away from their zero/one initialisation (zero heads and biases would hide
errors), eval mode, float32, at a small input where the model takes one (``SIZES``). It is
converted (width range [0.25, 1.0]); the record holds the refusal, or the channel groups by kind
(heads, MLP, embedding), the relative difference to the original at width 1.0 (max abs
difference over max abs output), MACs at 0.5 over MACs at 1.0 (attention's matrix products
counted), the relative difference of the dense export (``usnet.export.extract``) to the slimmed
model at width 0.5, and the same for the dense export run in ONNX Runtime. A refused model is
converted again with ``keep="auto"``. The table replaces the block between the markers in
``--out`` (docs/convert.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- attention:start -->", "<!-- attention:end -->"
#: model -> (input side, constructor arguments); torchvision's ViTs take their size as an argument
SIZES: dict[str, tuple[int, dict]] = {
    "text:transformer_encoder": (16, {}),
    "torchvision:vit_b_16": (64, {"image_size": 64}),
    "torchvision:vit_b_32": (64, {"image_size": 64}),
    "torchvision:swin_t": (64, {}),
    "torchvision:swin_v2_t": (64, {}),
    "torchvision:maxvit_t": (224, {}),
    "timm:vit_tiny_patch16_224": (64, {"img_size": 64}),
    "timm:vit_small_patch16_224": (64, {"img_size": 64}),
    "timm:deit_tiny_patch16_224": (64, {"img_size": 64}),
    "timm:deit_tiny_distilled_patch16_224": (64, {"img_size": 64}),
    "timm:swin_tiny_patch4_window7_224": (224, {}),
    "timm:beit_base_patch16_224": (64, {"img_size": 64}),
    "timm:mixer_s16_224": (64, {"img_size": 64}),
    "timm:vit_small_r26_s32_224": (64, {"img_size": 64}),
    "timm:convit_tiny": (224, {}),
    "timm:cait_xxs24_224": (64, {"img_size": 64}),
    "timm:levit_128s": (224, {}),
}


def build(name: str):  # noqa: ANN201
    import torch
    from torch import nn

    source, _, model = name.partition(":")
    side, kwargs = SIZES[name]
    if source == "text":
        vocab, d = 1000, 128
        layer = nn.TransformerEncoderLayer(d, 4, 256, batch_first=True)

        class TextClassifier(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(1, side, d))
                self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
                self.head = nn.Linear(d, 4)

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                return self.head(self.encoder(self.emb(tokens) + self.pos).mean(1))

        return TextClassifier(), torch.randint(0, vocab, (2, side))
    if source == "torchvision":
        import torchvision

        net = torchvision.models.get_model(model, weights=None, **kwargs)
    else:
        import timm

        net = timm.create_model(model, pretrained=False, **kwargs)
    return net, torch.randn(2, 3, side, side)


def measure(name: str) -> dict:
    import warnings

    import torch

    import usnet
    from usnet.convert import ConvertError, convert
    from usnet.convert.plan import Plan
    from usnet.export import extract

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net, x = build(name)
    net.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        want = net(x)
    record: dict = {"model": name, "input": list(x.shape[1:])}
    start = time.perf_counter()
    try:
        model = convert(net, x)
    except ConvertError as e:
        record.update(status="refused", problems=len(e.problems))
        record["first"] = f"'{e.problems[0].module}' {e.problems[0].op}: {e.problems[0].problem}"
        try:
            auto = convert(net, x, keep="auto")
            plan = auto.conversion["plan"]  # type: ignore[index]
            kinds = [g.kind for g in Plan.from_json(plan).groups]
            record["auto"] = {k: kinds.count(k) for k in sorted(set(kinds))}
        except Exception as e2:  # noqa: BLE001
            record["auto_error"] = f"{type(e2).__name__}: {e2}"[:200]
        return record
    except Exception as e:  # noqa: BLE001
        return {**record, "status": "error", "message": f"{type(e).__name__}: {e}"[:300]}
    record["convert_s"] = round(time.perf_counter() - start, 1)
    model.eval()
    plan = model.conversion["plan"]  # type: ignore[index]
    kinds = [g.kind for g in Plan.from_json(plan).groups]
    record["kinds"] = {k: kinds.count(k) for k in sorted(set(kinds))}
    with torch.no_grad():
        record["rel_full"] = _rel(model(x), want)
    record["macs_full"] = usnet.macs(model, 1.0)
    record["macs_ratio"] = usnet.macs(model, 0.5) / record["macs_full"]
    dense = extract(model, 0.5)
    with torch.no_grad(), usnet.width(model, 0.5):
        slim = model(x)
        record["rel_dense"] = _rel(dense(x), slim)
    if sum(p.numel() for p in dense.parameters()) < 40e6:
        record["rel_onnx"] = _onnx(dense, x, slim)
    record["status"] = "converted"
    return record


def _onnx(dense, x, want) -> float | str:  # noqa: ANN001
    import onnxruntime
    import torch

    buffer = io.BytesIO()
    try:
        torch.backends.mha.set_fastpath_enabled(False)  # torch's fused kernels have no ONNX form
        torch.onnx.export(dense, (x,), buffer, dynamo=False, input_names=["x"])  # type: ignore[arg-type]
        run = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(run.run(None, {"x": x.numpy()})[0])
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"[:150]
    return _rel(got, want)


def _rel(a, b) -> float:  # noqa: ANN001
    return float((a - b).abs().max() / b.abs().max())


def run_one(name: str, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, __file__, "--child", name]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "timeout", "message": f"over {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "status": "error", "message": tail[:300]}
    return {**json.loads(lines[-1]), "seconds": round(time.perf_counter() - start)}


def row(r: dict) -> str:
    name = f"{r['model']} ({'x'.join(map(str, r.get('input', [])))})"
    if r["status"] == "converted":
        kinds = ", ".join(f"{n} {k}" for k, n in r["kinds"].items())
        onnx = r.get("rel_onnx", "not run (size)")
        onnx = f"{onnx:.1e}" if isinstance(onnx, float) else onnx
        return (
            f"| {name} | converted: {kinds} | {r['rel_full']:.1e} | {r['macs_full'] / 1e6:.1f} M "
            f"| {r['macs_ratio']:.3f} | {r['rel_dense']:.1e} | {onnx} |"
        )
    if r["status"] == "refused":
        auto = r.get("auto") or r.get("auto_error", "?")
        auto = ", ".join(f"{n} {k}" for k, n in auto.items()) if isinstance(auto, dict) else auto
        text = f"refused ({r['problems']}): {r['first']}; keep=\"auto\": {auto or 'nothing'}"
    else:
        text = f"{r['status']}: {r.get('message', '')}"
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"| {name} | {text} | | | | | |"


def table(records: list[dict], command: str) -> str:
    ok = [r for r in records if r["status"] == "converted"]
    exact = [r for r in ok if r["rel_full"] <= 1e-4 and r["rel_dense"] <= 1e-4]
    lines = [
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} (one thread per model).",
        "",
        f"**{len(ok)} of {len(records)} convert**, {len(exact)} of them exact (relative "
        "difference <= 1e-4 at width 1.0 and of the dense export at 0.5).",
        "",
        "| model (input) | result: groups by kind | rel. diff 1.0 | MACs 1.0 | MACs 0.5 / 1.0 "
        "| dense 0.5 | ONNX Runtime 0.5 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(lines + [row(r) for r in records])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="SOURCE:NAME", choices=tuple(SIZES))
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per model")
    p.add_argument("--out", type=Path, default=ROOT / "docs/convert.md")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return 0
    records = []
    for name in args.only or SIZES:
        records.append(run_one(name, args.timeout))
        print(row(records[-1]), flush=True)
    command = "python benchmarks/convert_transformers.py" + (
        " --only " + " ".join(args.only) if args.only else ""
    )
    text = args.out.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        args.out.write_text(head + START + "\n" + table(records, command) + "\n" + END
                            + rest.split(END, 1)[1])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
