"""The latency model: layer keys, the fit against a backend with a known law, saving, checks."""

from __future__ import annotations

import pytest
import torch

import usnet
from usnet.latency import LatencyModel, backend, build, layers, random_widths
from usnet.latency.model import KINDS, kind_of, validate


def tiny():
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v1_small", blocks=((32, 1, 1), (32, 1, 2)), stem_channels=32
    )


class LawBackend:
    """A machine whose timings follow a known law: each layer costs by its input's size, and a
    network costs 0.3 ms + 0.5 x its conv and linear layers + 2 x its norms + 1 x the rest."""

    name = "law"
    truth = {"weights": 0.5, "norm": 2.0, "other": 1.0}

    def environment(self):
        return {"backend": "law", "device_name": "test machine", "threads": 1}

    def time_layer(self, module, shape, repeats):
        n = 1
        for s in shape:
            n *= s
        return 1e-4 * n + 1e-3 * sum(p.numel() for p in module.parameters()) ** 0.5

    def end_to_end(self, model, widths, batch_size, rounds, warmup, statistic="median"):
        out = []
        for w in widths:
            total = 0.3
            for layer in layers(model, w, batch_size):
                total += self.truth[kind_of(layer)] * self.time_layer(layer.module, layer.shape, 1)
            out.append(total)
        return out


def test_layer_keys_name_the_computation_whatever_width_or_model_it_came_from():
    model = tiny()
    full = {layer.key for layer in layers(model, 1.0)}
    half = {layer.key for layer in layers(model, 0.5)}
    mixed = layers(model, {"stem": 1.0, "block1": 0.5, "block2": 0.5})
    # the stem's conv, norm and activation are the full network's; the last layers the half's
    assert [x.key for x in mixed[:3]] == [x.key for x in layers(model, 1.0)[:3]]
    assert [x.key for x in mixed[-4:]] == [x.key for x in layers(model, 0.5)[-4:]]
    assert full != half and len(layers(model, 1.0)) == len(layers(model, 0.5))
    assert all(kind_of(x) in KINDS for x in mixed)


def test_the_fit_recovers_a_known_law_and_predicts_widths_it_never_saw(tmp_path):
    model = tiny()
    lm = build(model, LawBackend(), fit=10, validate=5, rounds=1, warmup=0)
    assert lm.fit["form"] == "per-kind"
    assert lm.intercept == pytest.approx(0.3, abs=1e-6)
    assert lm.coefficients == pytest.approx(LawBackend.truth, rel=1e-5)
    assert lm.validation["median_abs_error"] < 1e-6 and len(lm.validation["rows"]) == 5
    unseen = random_widths(model, 3, seed=99)
    truth = LawBackend().end_to_end(model, unseen, 1, 1, 0)
    assert [lm.predict(model, w) for w in unseen] == pytest.approx(truth, rel=1e-6)
    assert validate(lm, model, LawBackend(), n=3, seed=5)["max_abs_error"] < 1e-6
    # saved with its device, loaded back, refused on another machine
    path = lm.save(tmp_path / "lm.json")
    back = LatencyModel.load(path)
    assert back.table == lm.table and back.environment["device_name"] == "test machine"
    assert back.predict(model, unseen[0]) == pytest.approx(lm.predict(model, unseen[0]))
    with pytest.raises(ValueError, match="built for backend='law'.*usnet latency"):
        back.attach(backend("eager"))
    back.table.clear()
    with pytest.raises(ValueError, match="not in the latency table and no backend"):
        back.predict(model, 0.5)


def test_eager_pytorch_on_this_cpu_builds_and_validates():
    lm = build(
        tiny(), backend("eager"), fit=6, validate=3, rounds=3, warmup=1, repeats=3
    )
    v = lm.validation
    assert v["widths"] == 3 and all(r["measured_ms"] > 0 and r["predicted_ms"] for r in v["rows"])
    assert lm.environment["backend"] == "eager" and lm.environment["threads"] == 1


def test_onnx_runtime_times_the_dense_export():
    pytest.importorskip("onnxruntime")
    model = tiny()
    ort = backend("onnxruntime")
    (ms,) = ort.end_to_end(model, [0.5], 1, 2, 1)
    assert ms > 0
    layer = layers(model, 0.5)[0]
    assert ort.time_layer(layer.module, layer.shape, 3) > 0
