"""``usnet calibrate CKPT --widths ...``: post-statistics BN for any widths of a checkpoint."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "calibrate",
        help="compute batch-norm statistics of a checkpoint at some widths and save them into it",
    )
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors + usnet.json)")
    p.add_argument("--widths", required=True, help="grid 'start:stop:step' or list '0.35,0.5,1.0'")
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="training images (default: as trained, else 2000)",
    )
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--method", choices=("exact", "single_pass"), default=None)
    p.add_argument(
        "--data-root", default=None, help="data folder (default: as in the checkpoint's config)"
    )
    p.add_argument("--device", default="cpu")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import checkpoint
    from ..calibration import calibrate
    from ..data import calibration_loader
    from ..nn import format_width, parse_widths

    widths = parse_widths(args.widths)
    meta = checkpoint.read_meta(args.checkpoint)
    cfg = meta.get("config") or {}
    data = cfg.get("data") or {}
    if "name" not in data:
        raise ValueError(
            f"{args.checkpoint}: its metadata names no training data set (meta.config.data.name); "
            "calibrate it from Python with usnet.calibrate(model, loader, widths)"
        )
    calib_cfg = cfg.get("calibrate") or {}
    num = args.num_samples or int(calib_cfg.get("num_samples", 2000))
    method = args.method or calib_cfg.get("method", "exact")
    model = checkpoint.load(args.checkpoint).to(args.device)
    loader = calibration_loader(
        data["name"],
        args.data_root or data.get("root"),
        num,
        args.batch_size,
        seed=int((cfg.get("train") or {}).get("seed", 0)),
    )
    calibrate(model, loader, widths, num, method)
    checkpoint.save(model.cpu(), args.checkpoint, meta=meta)
    print(
        f"calibrated {len(widths)} width(s) ({', '.join(format_width(w) for w in widths)}) "
        f"from {num} samples ({method}); saved into {args.checkpoint}"
    )
    return 0
