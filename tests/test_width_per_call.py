"""The width is a value of the call: threads and asyncio tasks at different widths on one model
get exactly their sequential results, and torch.compile runs any number of widths compiled."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from tiny import eval_at

import usnet
from usnet.calibration import calibrate

WIDTHS = [0.25, 0.5, 0.75, 1.0]
#: Twelve widths, each a network of its own in ``_model()`` (its last group has 128 channels).
TWELVE = [0.25 + i / 16 for i in range(12)]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return usnet.create_model(
        "us_mobilenet_v1_small", input_size=16, blocks=((32, 1, 1), (128, 1, 2))
    )


def _inputs(n: int) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def test_four_threads_at_four_widths_get_their_sequential_results():
    model, x = _model(), _inputs(8)
    calibrate(model, [x], WIDTHS)
    expected = {w: eval_at(model, x, w) for w in WIDTHS}
    space = usnet.nn.width_space(model)
    assert len({space.resolve(w)[1] for w in WIDTHS}) == len(WIDTHS)  # four networks
    wrong: list[tuple[float, float]] = []
    calls = dict.fromkeys(WIDTHS, 0)
    start = threading.Barrier(len(WIDTHS))
    stop = time.monotonic() + 2.0

    def serve(w: float) -> None:
        start.wait()
        while time.monotonic() < stop:
            with usnet.width(model, w), torch.no_grad():
                y = model(x)
            calls[w] += 1
            if not torch.equal(y, expected[w]):
                wrong.append((w, (y - expected[w]).abs().max().item()))

    threads = [threading.Thread(target=serve, args=(w,)) for w in WIDTHS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, wrong[:5]
    assert min(calls.values()) >= 20, calls  # every thread ran many calls, interleaved
    assert usnet.get_width(model) == 1.0  # the default width is untouched


def test_threads_calibrate_their_widths_on_first_use_from_attached_data():
    """A server with attached calibration data: each thread's first call at its width calibrates
    it while the others wait or serve, and every call gets the sequential result."""
    x, data = _inputs(8), [_inputs(16)]
    reference = _model()
    calibrate(reference, data, WIDTHS, num_samples=16)
    expected = {w: eval_at(reference, x, w) for w in WIDTHS}
    model = _model().eval()
    usnet.attach_calibration_data(model, data, num_samples=16)
    wrong: list[tuple[float, str]] = []
    start = threading.Barrier(len(WIDTHS))

    def serve(w: float) -> None:
        start.wait()
        try:
            for _ in range(10):
                with usnet.width(model, w), torch.no_grad():
                    y = model(x)
                if not torch.equal(y, expected[w]):
                    wrong.append((w, f"off by {(y - expected[w]).abs().max().item()}"))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            wrong.append((w, repr(e)[:200]))

    threads = [threading.Thread(target=serve, args=(w,)) for w in WIDTHS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, wrong
    assert all(usnet.is_calibrated(model, w) for w in WIDTHS)


def test_a_block_width_is_not_seen_by_other_threads_and_the_default_is():
    model = _model()
    seen: list[object] = []
    usnet.set_width(model, 0.5)
    with usnet.width(model, 0.75):
        t = threading.Thread(target=lambda: seen.append(usnet.get_width(model)))
        t.start()
        t.join()
        assert usnet.get_width(model) == 0.75
    assert seen == [0.5] and usnet.get_width(model) == 0.5


def test_asyncio_tasks_keep_their_own_width():
    model, x = _model(), _inputs(4)
    calibrate(model, [x], WIDTHS)
    expected = {w: eval_at(model, x, w) for w in WIDTHS}

    async def serve(w: float) -> torch.Tensor:
        with usnet.width(model, w):
            await asyncio.sleep(0)  # the other tasks enter their widths meanwhile
            with torch.no_grad():
                return model(x)

    async def main() -> list[torch.Tensor]:
        return await asyncio.gather(*(serve(w) for w in WIDTHS))

    for w, y in zip(WIDTHS, asyncio.run(main()), strict=True):
        torch.testing.assert_close(y, expected[w], rtol=0, atol=0)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.fixture
def fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_model_runs_twelve_widths_in_eval_one_graph_per_network(fresh_dynamo):
    widths = TWELVE
    model, x = _model(), _inputs(4)
    calibrate(model, [x], widths)
    space = usnet.nn.width_space(model)
    networks = {space.resolve(w)[1] for w in widths}
    expected = {w: eval_at(model, x, w) for w in widths}
    compiled = usnet.compile(model, backend="aot_eager")
    before = _graphs()
    with torch.no_grad():
        for _ in range(2):  # the second round reuses every graph
            for w in widths:
                with usnet.width(compiled, w):
                    torch.testing.assert_close(compiled(x), expected[w])
    # eval reads each network's calibrated statistics: one graph per network, never eager
    assert len(networks) == 12 and _graphs() - before == 12


def test_compiled_training_traces_channel_counts_as_symbols(fresh_dynamo):
    model, x = _model(), _inputs(4)
    model.train()
    widths = TWELVE
    expected = {}
    for w in widths:
        with usnet.width(model, w):
            expected[w] = model(x).detach()
    compiled = torch.compile(model, backend="aot_eager")
    before = _graphs()
    for w in widths:
        with usnet.width(compiled, w):
            torch.testing.assert_close(compiled(x).detach(), expected[w])
    # batch statistics: the first width specialises, the second marks the counts dynamic
    assert _graphs() - before <= 3
