"""Typed configs from YAML, validated by pydantic v2: the generic layer (:mod:`.typed`: the
:class:`Section` base, overrides, loading), usnet's one-line errors (:mod:`.errors`,
:mod:`.messages`), YAML reading (:mod:`.yaml_io`) and the sections every task shares
(:mod:`.sections`). Each task's schema lives in its package (``usnet.tasks.<name>.config``)."""

from .errors import ConfigError, UnknownKeyError
from .sections import (
    EvalConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
)
from .typed import (
    Section,
    apply_overrides,
    build_config,
    from_dict,
    load_config,
    to_dict,
    validate,
)
from .yaml_io import dump_yaml, load_yaml

__all__ = [
    "ConfigError",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "ScheduleConfig",
    "TrainingConfig",
    "UnknownKeyError",
    "apply_overrides",
    "build_config",
    "dump_yaml",
    "from_dict",
    "load_config",
    "load_yaml",
    "Section",
    "to_dict",
    "validate",
]
