"""Where a slimmed network's eval time goes beyond its dense export's: the per-layer choice of
active tensors (docs/benchmarks_vit.md).

    python benchmarks/eval_overhead.py --model vit --width 0.5 --batch 1

Three runs of the same network against its dense export, each as interleaved pairs (CPU time,
one thread): as it is; with every slimmable layer's ``_current`` (the eval cache lookup and its
checks) replaced by a constant holding what it returns at this width, the same tensors; and as
it is again. The difference between the first and second is what choosing the active tensors
costs inside the network (more than the same calls timed alone, which is printed too). Between
them, a run with the cache lookup kept but its hit not validated (the checks that the layer's
tensors are still the cached views' tensors, with the same storage) shows what those checks
cost.

A fourth run sets the floor of eval outside a frozen block, which no change to the Python can go
below: the dense export against itself with each linear layer's weight made a strided view
into a tensor of the full layer's shape, as the slimmed network reads its weights (the eval cache keeps views only, so that
in-place writes are seen; a contiguous copy would go stale). Same code, same values, only the
weights' memory layout differs.

A last run is the network inside ``usnet.frozen(model)``: contiguous active tensors, unchecked
(the serving form, on the promise that no weight changes inside the block).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from measure import MODELS, build, calibrate_on_noise, inputs, interleaved
from torch import nn

import usnet
from usnet.export import extract
from usnet.nn import Sliced


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit", choices=MODELS)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=60)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = build(args.model)
    calibrate_on_noise(model, [args.width])
    model.eval()
    dense = extract(model, args.width).eval()
    usnet.set_width(model, args.width)
    x = inputs(model, args.batch)
    layers = [m for m in model.modules() if isinstance(m, Sliced)]

    def run(name: str, net: nn.Module = model) -> None:
        with torch.inference_mode():
            tu, td, pairs = interleaved(partial(net, x), partial(dense, x), 3, args.repeats)
        ratio = sorted(pairs)[len(pairs) // 2]
        print(f"{name:34s} ratio {ratio:.3f} ({tu * 1e3:.2f} ms vs dense {td * 1e3:.2f} ms)")

    print(f"{args.model} at width {args.width}, batch {args.batch}: {len(layers)} slimmable layers")
    run("as it is")
    with torch.inference_mode():
        model(x)
        values = {id(m): m._current() for m in layers}
        start = time.process_time()
        for _ in range(1000):
            for m in layers:
                m._current()
        alone = (time.process_time() - start) / 1000
    for m in layers:
        m.__dict__["_current"] = partial(values.__getitem__, id(m))
    run("active tensors free (a constant)")
    for m in layers:
        m.__dict__["_current"] = partial(unchecked, m)
    run("lookup without its storage checks")
    for m in layers:
        del m.__dict__["_current"]
    run("as it is, again")
    print(f"the {len(layers)} lookups timed alone: {alone * 1e6:.0f} us per forward")
    run("dense export, strided weights", strided_like(extract(model, args.width).eval(), model))
    with usnet.frozen(model):
        run("inside usnet.frozen (contiguous)")
    return 0


def unchecked(layer: Sliced) -> object:
    """The eval cache's hit without validating it (the checks of the layer's tensors and their
    storage): for this measurement only, unsafe after any change of the layer's tensors."""
    space = layer.space
    if space is None or layer.training or torch.is_grad_enabled():
        raise AssertionError("measured in eval under inference_mode only")
    checks, value = layer.__dict__["_eval_cache"][space.plan.key]
    return value if checks is not None else value[2]


@torch.no_grad()
def strided_like(dense: nn.Module, model: nn.Module) -> nn.Module:
    """``dense`` with every linear weight a view into zeros of its slimmable layer's full shape
    (the layer of the same name in ``model``), strided as the slimmed network's weights are."""
    for name, layer in dense.named_modules():
        if not isinstance(layer, nn.Linear):
            continue
        full = model.get_submodule(name).weight
        assert isinstance(full, torch.Tensor)
        o, i = layer.weight.shape
        big = layer.weight.new_zeros(max(o, int(full.shape[0])), max(i, int(full.shape[1])))
        big[:o, :i] = layer.weight
        layer.weight = nn.Parameter(big[:o, :i], requires_grad=False)
    return dense


if __name__ == "__main__":
    raise SystemExit(main())
