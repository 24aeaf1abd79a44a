"""Typed YAML configs: recipes load, bad input is named, overrides apply, round trips hold."""

from __future__ import annotations

import itertools
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from usnet import create_model
from usnet.config import (
    ConfigError,
    Section,
    TrainingConfig,
    UnknownKeyError,
    apply_overrides,
    build_config,
    dump_yaml,
    from_dict,
    load_yaml,
    to_dict,
    validate,
)
from usnet.config import load_config as _load_config
from usnet.config.sections import ScheduleConfig, check_amp
from usnet.config.widths import check_model_widths
from usnet.nn import width_space
from usnet.tasks import task_of
from usnet.tasks.classification import CalibrateConfig, TrainConfig
from usnet.training import STRATEGIES


def load_config(path: Path, overrides: list[str] = ()) -> TrainConfig:
    return _load_config(path, TrainConfig, overrides)


RECIPES = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
CLASSIFICATION = [p for p in RECIPES if task_of(load_yaml(p)) == "classification"]


def _header(path: Path) -> str:
    """A recipe's leading comment lines, without the ``#``."""
    lines = path.read_text().splitlines()
    return " ".join(line.lstrip("# ") for line in itertools.takewhile(lambda x: x.startswith("#"), lines))


def error(data: dict, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, data, overrides)
    return str(info.value)


# -- recipes ------------------------------------------------------------------------------------
def test_every_recipe_the_docs_and_scripts_name_exists() -> None:
    """A command in the README, docs/, scripts/ or a study plan that names a recipe runs it."""
    root = RECIPES[0].parents[1]
    texts = [root / "README.md", *(root / "docs").glob("*.md"), *(root / "scripts").glob("*.sh")]
    texts += (root / "benchmarks" / "plans").glob("*")
    named = {m for t in texts for m in re.findall(r"configs/[\w.-]+\.yaml", t.read_text())}
    assert "configs/fashion_mnist.yaml" in named  # the scan finds the main job's recipe
    assert sorted(n for n in named if not (root / n).is_file()) == []


@pytest.mark.parametrize("path", CLASSIFICATION, ids=lambda p: p.name)
def test_recipe_loads_and_fits_its_model(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert path.read_text().startswith("#"), "a recipe says where its numbers come from"
    model = create_model(cfg.model.name, **cfg.model.kwargs)
    space = width_space(model)
    for w in [*cfg.eval.grid, *(cfg.train.widths or [])]:
        space.canonical(w)  # raises if outside the model's range or switches


def test_default_recipe_is_the_dataclass_default_but_for_inplace_distillation() -> None:
    """The README's 4-epoch recipe turns inplace distillation off (the study: it costs accuracy
    in 4 epochs); the dataclass keeps the paper's rule."""
    fm = load_config(RECIPES[0].parent / "fashion_mnist.yaml")
    assert not fm.train.inplace_distillation and TrainConfig().train.inplace_distillation
    train = fm.train.model_copy(update={"inplace_distillation": True})
    assert fm.model_copy(update={"output": TrainConfig().output, "train": train}) == TrainConfig()
    paper = load_config(RECIPES[0].parent / "fashion_mnist_paper.yaml")  # the paper's rule
    assert paper.model_copy(update={"output": TrainConfig().output}) == TrainConfig()


def test_long_recipe_is_what_the_study_measured() -> None:
    """The result quoted for configs/fashion_mnist_long.yaml is the study's 16-epoch US-Net
    (schedule_v1 us-e16-s*): the recipe must be exactly those settings."""
    from benchmarks.study.plan import load_plan

    root = RECIPES[0].parents[1]
    plan = load_plan(root / "benchmarks/plans/schedule_v1.yaml", root)
    (run,) = [r for r in plan.runs if r.name == "us-e16-s0"]
    studied = load_config(root / plan.config, list(run.overrides))
    long = load_config(root / "configs/fashion_mnist_long.yaml")
    assert long.model_copy(update={"output": studied.output}) == studied


#: What a recipe's header may say of its numbers, and the field each phrase must match.
_CLAIMS = {
    r"(\d+) epochs": "train.epochs",
    r"batch (\d+)": "data.batch_size",
    r"\blr ([\d.e-]+)": "optim.lr",
    r"weight decay ([\d.e-]+)": "optim.weight_decay",
    r"\bn ?= ?(\d+)": "train.num_widths",
}
PAPER_RECIPES = [p for p in CLASSIFICATION if "paper.md" in _header(p)]


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: p.name)
def test_a_paper_recipes_header_states_its_own_numbers(path: Path) -> None:
    """The recipes that cite the paper say its numbers in their header (epochs, batch, lr,
    weight decay, n); the values below must be those numbers, so the two cannot drift."""
    data = to_dict(load_config(path))
    claims = [
        (field, float(value))
        for pattern, field in _CLAIMS.items()
        for value in re.findall(pattern, _header(path))
    ]
    assert claims  # the header states something to check
    for field, value in claims:
        section, key = field.split(".")
        assert float(data[section][key]) == value, f"{path.name}: header {value:g}, {field}"


def test_sampling_names_match_the_sampler() -> None:
    hint = typing.get_type_hints(TrainingConfig)["sampling"]
    assert typing.get_args(hint) == STRATEGIES


# -- unknown keys and bad values -----------------------------------------------------------------
def test_unknown_keys_named_with_suggestion() -> None:
    msg = error({"optimm": {}})
    assert "unknown key 'optimm'" in msg and "did you mean 'optim'" in msg
    msg = error({"optim": {"lrr": 0.1}})
    assert "unknown key 'optim.lrr'" in msg and "allowed: name, lr, momentum" in msg
    assert "did you mean 'lr'" in msg


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number, got 'fast'"),
        ({"optim": {"lr": 0}}, "optim.lr: must be > 0, got 0.0"),
        ({"train": {"epochs": 0}}, "train.epochs: must be >= 1, got 0"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer, got 2.5"),
        ({"train": {"inplace_distillation": "no"}}, "expected true or false, got 'no'"),
        ({"train": {"sampling": "sandwhich"}}, "did you mean 'sandwich'"),
        ({"train": {"amp": "fp8"}}, "train.amp: expected one of 'bf16', 'fp16' or null"),
        ({"train": {"grad_clip": "x"}}, "train.grad_clip: expected a number or null, got 'x'"),
        ({"optim": {"betas": [0.9]}}, "optim.betas: expected a list of 2 numbers"),
        ({"eval": {"widths": [0.5, "a"]}}, "eval.widths[1]: expected a number"),
        ({"eval": {"widths": "0.3:x"}}, "eval.widths: widths '0.3:x' must be"),
        ({"model": {"name": "us_mobilenet_v3"}}, "model.name: unknown model 'us_mobilenet_v3'"),
        ({"data": {"batch_size": 0}}, "data.batch_size: must be >= 1, got 0"),
        ({"data": []}, "data: expected a mapping with keys name, root"),
        ({"task": "sr"}, "task: expected one of 'classification', got 'sr'"),
    ],
)
def test_bad_values_named(data: dict, expected: str) -> None:
    assert expected in error(data)


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        ({"sampling": "switches"}, "train.widths: 'switches' sampling needs a list of widths"),
        ({"sampling": "fixed", "widths": [0.5, 1.0]}, "exactly one width"),
        ({"sampling": "sandwich", "num_widths": 1}, "train.num_widths: must be >= 2"),
        ({"sampling": "switches", "widths": [1.0, -0.5]}, "train.widths[1]: must be > 0"),
        ({"widths": [0.5, 1.0]}, "train.widths: is only used by 'switches' and 'fixed'"),
        (
            {"sampling": "random", "smallest_weight": 2},
            "train.smallest_weight: 2 has no effect with 'random' sampling",
        ),
        ({"smallest_weight": 0}, "train.smallest_weight"),
    ],
)
def test_cross_field_checks(train: dict, expected: str) -> None:
    assert expected in error({"train": train})


def test_more_cross_field_checks() -> None:
    assert "schedule.milestones: 'multistep' needs" in error({"schedule": {"name": "multistep"}})
    msg = error({"schedule": {"name": "multistep", "milestones": [3, 9]}})
    assert "schedule.milestones: must lie within train.epochs (4)" in msg
    assert "must be < train.epochs" in error({"schedule": {"warmup_epochs": 5}})
    switches = {"model": {"name": "us_mobilenet_v1", "kwargs": {"switches": [1.0, 0.5]}}}
    assert "model.kwargs.switches: a switchable-BN model" in error(switches)
    assert "nesterov: needs momentum > 0" in error({"optim": {"momentum": 0}})
    assert "schedule.min_lr: is only used by 'linear' and 'cosine'" in error(
        {"schedule": {"name": "constant", "min_lr": 0.1}}
    )


def test_widths_outside_the_model_are_named_by_the_model_with_the_config_path() -> None:
    """The model checks its widths (range, switches); the error names the config field."""
    switches = {"model": {"name": "us_mobilenet_v1", "kwargs": {"switches": [1.0, 0.5]}}}
    cfg = build_config(
        TrainConfig,
        {**switches, "train": {"sampling": "switches", "widths": [1.0, 0.5]}},
        ["eval.widths=[0.5, 0.75]"],
    )
    model = create_model(cfg.model.name, **cfg.model.kwargs)
    with pytest.raises(ConfigError, match=r"eval.widths: width 0.75 is not one of this model's "
                       r"switches \[1.0, 0.5\]"):
        check_model_widths(model, {"train.widths": cfg.train.widths, "eval.widths": cfg.eval.grid})
    with pytest.raises(ConfigError, match=r"train.widths: width 0.1 is outside the model's width "
                       r"range \[0.25, 1.0\]"):
        check_model_widths(create_model("us_mobilenet_v1"), {"train.widths": [0.1]})


def test_fp16_is_cuda_only() -> None:
    cfg = build_config(TrainConfig, {"train": {"amp": "fp16"}})
    check_amp(cfg.train.amp, "cuda")
    with pytest.raises(ConfigError, match="train.amp: 'fp16' autocast needs a CUDA device"):
        check_amp(cfg.train.amp, "cpu")
    check_amp(build_config(TrainConfig, {"train": {"amp": "bf16"}}).train.amp, "cpu")


# -- files ---------------------------------------------------------------------------------------
def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML at line"):
        load_yaml(bad)
    bad.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_yaml(bad)
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_yaml(bad)
    bad.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: optim\.lr: expected a number, got 'fast'"):
        load_config(bad)


def test_yaml_details(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  weight_decay: 4e-5\n")  # PyYAML alone reads '4e-5' as a string
    assert load_config(path).optim.weight_decay == 4e-5
    path.write_text("")
    assert load_yaml(path) == {} and load_config(path) == TrainConfig()
    path.write_text("task: rl\n")
    assert task_of(load_yaml(path)) == "rl" and task_of({}) == "classification"
    with pytest.raises(ConfigError, match="task: expected one of classification, sr, rl"):
        task_of({"task": "seg"})


# -- overrides -----------------------------------------------------------------------------------
def test_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.1\n")
    cfg = load_config(
        path,
        [
            "optim.lr=0.2",
            "train.sampling=switches",
            "train.widths=[0.35, 1.0]",
            "model.kwargs.in_chans=3",
            "data.root=null",
            "optim.weight_decay=1e-5",
        ],
    )
    assert cfg.optim.lr == 0.2 and cfg.train.widths == [0.35, 1.0]
    assert cfg.model.kwargs == {"in_chans": 3} and cfg.optim.weight_decay == 1e-5
    assert load_config(path).optim.lr == 0.1  # the file's data is not changed


def test_bad_overrides_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.1\n")
    with pytest.raises(UnknownKeyError, match=r"--set optim.lrr=1: unknown key 'optim.lrr'"):
        load_config(path, ["optim.lrr=1"])
    with pytest.raises(UnknownKeyError, match="unknown key 'trian'"):
        load_config(path, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match="optim.lr: is a number, not a mapping"):
        load_config(path, ["optim.lr.x=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["optim.lr"])
    with pytest.raises(ConfigError, match=r"--set train\.epochs=x: train\.epochs: expected an int"):
        load_config(path, ["train.epochs=x"])


def test_overrides_without_schema_need_existing_keys() -> None:
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2"]) == {"a": {"b": 2}} and data == {"a": {"b": 1}}
    with pytest.raises(UnknownKeyError, match="unknown key 'a.c'; allowed: b"):
        apply_overrides(data, ["a.c=2"])


# -- round trips and reuse by other tasks --------------------------------------------------------
@pytest.mark.parametrize("path", CLASSIFICATION, ids=lambda p: p.name)
def test_round_trip(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    out = tmp_path / "again.yaml"
    out.write_text(dump_yaml(cfg))
    assert load_config(out) == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]


def test_python_built_configs_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="num_samples: must be >= 1, got 0"):
        CalibrateConfig(num_samples=0)
    with pytest.raises(ConfigError, match="milestones: 'multistep' needs at least one"):
        ScheduleConfig(name="multistep")
    unchecked = TrainConfig().model_copy(
        update={"calibrate": CalibrateConfig.model_construct(num_samples=0)}
    )
    with pytest.raises(ConfigError, match="calibrate.num_samples: must be >= 1, got 0"):
        validate(unchecked)


def test_numbers_must_be_finite_and_types_strict() -> None:
    assert "optim.lr: must be a finite number, got nan" in error({"optim": {"lr": float("nan")}})
    assert "data.batch_size: expected an integer, got '128'" in error({"data": {"batch_size": "128"}})
    assert "model.kwargs key 1: expected a string" in error({"model": {"kwargs": {1: 2}}})
    assert "eval.widths: expected a string or a number or a list of numbers, got {}" in error(
        {"eval": {"widths": {}}}
    )


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class _Inner(Section):
    size: int = Field(8, ge=1, le=64)
    names: list[str] = ["a"]
    extra: dict[str, float] = Field(default_factory=dict)


class _Outer(Section):
    task: Literal["toy"]
    inner: _Inner = Field(default_factory=_Inner)
    maybe: _Inner | None = None
    anything: Any = None
    pair: Annotated[tuple[float, float], Field()] | None = None


def test_generic_layer_on_another_schema() -> None:
    cfg = from_dict(_Outer, {"task": "toy", "inner": {"size": 4, "names": ["x", "y"]}})
    assert cfg.inner == _Inner(size=4, names=["x", "y"]) and cfg.maybe is None
    assert from_dict(_Outer, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="task: is required"):
        from_dict(_Outer, {})
    with pytest.raises(ConfigError, match=r"cfg\.inner\.size: must be >= 1 and <= 64, got 65"):
        from_dict(_Outer, {"task": "toy", "inner": {"size": 65}}, where="cfg")
    with pytest.raises(ConfigError, match=r"maybe\.size: expected an integer"):
        from_dict(_Outer, {"task": "toy", "maybe": {"size": "big"}})
    with pytest.raises(ConfigError, match=r"inner\.extra\.k: expected a number, got 'v'"):
        from_dict(_Outer, {"task": "toy", "inner": {"extra": {"k": "v"}}})
    merged = apply_overrides({"task": "toy"}, ["maybe.size=2", "inner.extra.k=0.5"], _Outer)
    assert from_dict(_Outer, merged).maybe == _Inner(size=2)
