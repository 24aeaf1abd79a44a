"""The search of per-group widths on a tiny US-MobileNet v1 (3 groups of 32 channels, 4 levels
each): the front, budgets, resuming a killed search, seeds, and the uniform widths as a floor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import usnet
from usnet.calibration import calibrate
from usnet.search import (
    Budget,
    Candidate,
    EvolutionSettings,
    SearchSettings,
    best_within,
    choose,
    pareto_front,
    run_search,
    search_space,
)
from usnet.search.core import standard_error
from usnet.search.costs import CostModel
from usnet.search.front import goodness
from usnet.search.measure import Measurer
from usnet.search.space import uniform_grid
from usnet.search.store import SearchStore
from usnet.spectrum import Metric, MetricProvider

METRICS = (
    Metric("top1", "top-1 accuracy", True, fraction=True),
    Metric("loss", "cross-entropy", False),
)


def tiny():
    torch.manual_seed(0)
    model = usnet.create_model(
        "us_mobilenet_v1_small", blocks=((32, 1, 1), (32, 1, 2)), stem_channels=32
    )
    with torch.no_grad():  # BN affine off their 1/0 init, so widths differ more
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | usnet.nn.USBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


CAL = [data(32, 1)[0], data(32, 2)[0]]
VAL = data(48, 3)


def provider() -> MetricProvider:
    @torch.inference_mode()
    def evaluate(model, width):
        model.eval()
        with usnet.width(model, width):
            logits = model(VAL[0])
        return {
            "top1": (logits.argmax(1) == VAL[1]).float().mean().item(),
            "loss": F.cross_entropy(logits, VAL[1]).item(),
        }

    return MetricProvider("classification", METRICS, evaluate)


def search(model, settings, path=None, on_new=None, counter=None, samples=None):
    store = SearchStore(path, {"test": 1})
    measurer = Measurer(
        model, provider(), store, CAL, 64, "single_pass", on_new=on_new, counter=counter
    )
    return run_search(model, measurer, METRICS, settings, samples), measurer


@pytest.fixture(scope="module")
def greedy_run():
    model = tiny()
    return model, search(model, SearchSettings("greedy", Budget(max_macs=200e3)))[0]


def test_levels_are_the_distinct_channel_counts_with_both_ends():
    space = search_space(tiny(), 0.05)
    assert space.groups == ("stem", "block1", "block2")
    assert space.levels == ((0.25, 0.5, 0.75, 1.0),) * 3  # 8, 16, 24, 32 channels
    assert uniform_grid(tiny()) == [0.25, 0.5, 0.75, 1.0]  # named by their share of channels


def test_greedy_walks_from_full_to_smallest_one_level_at_a_time(greedy_run):
    model, result = greedy_run
    space = result.space
    assert result.trace[0].macs == usnet.macs(model, 1.0)
    smallest = usnet.nn.width_space(model).resolve(space.width(space.smallest))[1]
    assert result.trace[-1].network == smallest  # measured first as the uniform width 0.25
    assert result.trace[-1].macs == usnet.macs(model, 0.25)
    assert len(result.trace) == 1 + 9  # 3 groups x 3 steps down
    assert all(b.macs < a.macs for a, b in zip(result.trace, result.trace[1:], strict=False))


def test_the_front_is_monotone_and_every_budget_gets_a_member_within_it(greedy_run):
    model, result = greedy_run
    front = result.front
    assert len(front) >= 2
    for a, b in zip(front, front[1:], strict=False):
        assert a.macs < b.macs  # cheaper first
        assert goodness(a, METRICS) < goodness(b, METRICS)  # and strictly worse
        assert a.metrics["top1"] <= b.metrics["top1"]
    # the front holds every candidate's best: nothing measured beats a member on both counts
    for c in result.candidates:
        assert not any(
            c.macs <= f.macs and goodness(c, METRICS) > goodness(f, METRICS) for f in front
        )
    for limit in sorted({c.macs for c in result.candidates}):
        best = best_within(result.candidates, METRICS, Budget(max_macs=limit))
        assert best is not None and best.macs <= limit
        assert best.network in {f.network for f in front}
    assert result.chosen is not None and result.chosen.macs <= 200e3
    # MACs as recorded are the model's own count (an independent path through FlopCounterMode)
    for f in front:
        assert f.macs == usnet.macs(model, f.width)


def test_the_chosen_network_is_never_worse_than_the_best_uniform_width_within_budget(greedy_run):
    """The oracle measures each uniform width afresh, outside the search's caches."""
    _, result = greedy_run
    model = tiny()
    p = provider()
    best = None
    for w in [0.25, 0.3, 0.4, 0.5, 0.55, 0.6, 0.75, 0.8, 0.9, 1.0]:
        if usnet.macs(model, w) <= 200e3:
            calibrate(model, CAL, [w], 64, "single_pass")
            m = p(model, w)
            best = (
                m
                if best is None or (m["top1"], -m["loss"]) > (best["top1"], -best["loss"])
                else best
            )
    assert best is not None and result.chosen is not None
    assert (result.chosen.metrics["top1"], -result.chosen.metrics["loss"]) >= (
        best["top1"],
        -best["loss"],
    )
    assert result.best_uniform is not None
    assert result.best_uniform.metrics["top1"] == pytest.approx(best["top1"])


def test_a_killed_search_resumes_where_it_stopped_with_the_same_result(tmp_path, greedy_run):
    _, whole = greedy_run
    path = tmp_path / "store.json"
    settings = SearchSettings("greedy", Budget(max_macs=200e3))
    k = 7

    def kill_after_k(c: Candidate) -> None:
        kill_after_k.n += 1  # type: ignore[attr-defined]
        if kill_after_k.n == k:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    kill_after_k.n = 0  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        search(tiny(), settings, path, kill_after_k)
    assert len(SearchStore(path, {"test": 1}).candidates) == k  # the file holds all k
    resumed, measurer = search(tiny(), settings, path)
    assert resumed.resumed == k and measurer.new == len(whole.candidates) - k
    assert [c.to_dict() for c in resumed.front] == [c.to_dict() for c in whole.front]
    assert [c.network for c in resumed.trace] == [c.network for c in whole.trace]
    assert resumed.chosen == whole.chosen


def test_a_store_of_other_settings_is_refused(tmp_path):
    path = tmp_path / "store.json"
    store = SearchStore(path, {"a": 1})
    store.add(Candidate(0.5, "n", 1, 1, metrics={"top1": 0.5}))
    with pytest.raises(ValueError, match="measuring settings differ"):
        SearchStore(path, {"a": 2})
    path.write_text("{")
    with pytest.raises(ValueError, match="unreadable search store"):
        SearchStore(path, {"a": 1})


def test_evolution_is_seeded_and_keeps_the_budget():
    settings = EvolutionSettings(population=6, generations=2)
    model = tiny()
    counter = CostModel(model)  # many draws are counted: the exact polynomial answers fast
    runs = [
        search(
            model,
            SearchSettings("evolution", Budget(max_macs=150e3), seed=s, evolution=settings),
            counter=counter,
        )[0]
        for s in (3, 3, 4)
    ]
    a, b, c = runs
    assert [x.to_dict() for x in a.candidates] == [x.to_dict() for x in b.candidates]
    assert [x.network for x in a.candidates] != [x.network for x in c.candidates]
    evolved = [x for x in a.candidates if x.origin == "evolution"]
    assert evolved and all(x.macs <= 150e3 for x in evolved)
    assert a.chosen is not None and a.chosen.macs <= 150e3
    assert a.best_uniform is not None
    assert goodness(a.chosen, METRICS) >= goodness(a.best_uniform, METRICS)


def test_evolution_needs_a_budget_that_some_network_fits():
    with pytest.raises(ValueError, match="evolution searches under a budget"):
        search(tiny(), SearchSettings("evolution", Budget()))
    with pytest.raises(ValueError, match="no network fits the budget"):
        search(tiny(), SearchSettings("evolution", Budget(max_macs=1000)))


def test_the_cost_polynomial_is_exact_and_refuses_a_model_it_does_not_fit():
    model = tiny()
    costs = CostModel(model)
    assert costs.exact
    for w in (0.25, 0.4, 1.0, {"stem": 0.3, "block1": 0.9, "block2": 0.6}):
        assert costs(w) == (usnet.macs(model, w), usnet.profile.params(model, w))
    # a cost that is no polynomial of the channel counts: every width is counted instead
    odd = CostModel(model, macs=lambda m, w: usnet.macs(m, w) ** 2 % 1009, params=lambda m, w: 0)
    assert not odd.exact and odd(0.4)[0] == usnet.macs(model, 0.4) ** 2 % 1009


class Residual(torch.nn.Module):
    """A plain CNN with a residual add: converted, its add ties the stem's and the block's
    output channels into one group."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.block = nn.Sequential(
            nn.Conv2d(32, 48, 3, 1, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(),
            nn.Conv2d(48, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32),
        )  # fmt: skip
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)).mean((2, 3)))


def test_a_converted_model_is_searched_like_a_built_in_one():
    torch.manual_seed(0)
    model = usnet.convert(Residual(), torch.randn(2, 1, 28, 28), width_range=(0.25, 1.0))
    space = search_space(model)
    assert len(space.groups) == 2 and all(len(ls) > 2 for ls in space.levels)
    assert CostModel(model).exact
    result, _ = search(model, SearchSettings("greedy", Budget(max_macs=usnet.macs(model, 0.6))))
    assert result.chosen is not None and result.chosen.macs <= usnet.macs(model, 0.6)
    assert isinstance(result.trace[-1].width, float) or len(result.trace) > 1


def test_a_lead_under_min_gain_keeps_the_uniform_width():
    def c(name, macs, top1):
        return Candidate(0.5, name, macs, 10, metrics={"top1": top1, "loss": 1.0})

    uniform = [c("u1", 10, 0.80), c("u2", 30, 0.85)]
    found = [*uniform, c("n1", 25, 0.86), c("n2", 28, 0.90)]
    budget = Budget(max_macs=30)
    assert [x.network for x in choose(found, uniform, METRICS, budget)] == ["n2", "n2", "u2"]
    chosen, best, _ = choose(found, uniform, METRICS, budget, min_gain=0.06)
    assert chosen.network == "u2" and best.network == "n2"
    assert choose(found, uniform, METRICS, budget, min_gain=0.05)[0].network == "n2"
    # one standard error of the best uniform width's top-1 on the validation images
    assert standard_error(uniform[1], METRICS, 400) == pytest.approx((0.85 * 0.15 / 400) ** 0.5)
    assert standard_error(uniform[1], METRICS, None) == 0.0


def test_the_default_min_gain_is_two_standard_errors_of_the_best_uniform_width(greedy_run):
    model, _ = greedy_run
    settings = SearchSettings("greedy", Budget(max_macs=200e3))
    result, _ = search(model, settings, samples=400)
    uniform = best_within(result.uniform, METRICS, settings.budget)
    one = (uniform.metrics["top1"] * (1 - uniform.metrics["top1"]) / 400) ** 0.5
    assert one > 0 and result.min_gain == pytest.approx(2 * one)
    lead = result.best.metrics["top1"] - uniform.metrics["top1"]
    expected = result.best if lead >= 2 * one else uniform
    assert result.chosen.network == expected.network


def test_pareto_front_and_budget_rules_on_hand_made_candidates():
    def c(name, macs, top1, loss=1.0):
        return Candidate(0.5, name, macs, 10, metrics={"top1": top1, "loss": loss})

    cands = [
        c("a", 10, 0.5),
        c("b", 20, 0.5),
        c("c", 20, 0.7),
        c("d", 30, 0.6),
        c("e", 40, 0.7, 0.5),
    ]
    assert [x.network for x in pareto_front(cands, METRICS)] == ["a", "c", "e"]
    assert best_within(cands, METRICS, Budget(max_macs=35)).network == "c"
    assert best_within(cands, METRICS, Budget(max_macs=5)) is None
    with pytest.raises(ValueError, match="--max-macs must be > 0"):
        Budget(max_macs=0)
    assert Budget(max_latency_ms=3, max_macs=5).cost == "latency_ms"
    assert Budget(max_params=3).cost == "params" and Budget().empty
