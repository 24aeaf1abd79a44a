"""Typed configs from YAML: a generic validated layer (:mod:`.typed`) that every task reuses,
YAML reading (:mod:`.yaml_io`) and the sections every task shares (:mod:`.sections`). Each
task's schema lives in its package (``usnet.tasks.<name>.config``)."""

from .sections import (
    EvalConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
)
from .typed import (
    ConfigError,
    UnknownKeyError,
    apply_overrides,
    build_config,
    from_dict,
    setting,
    to_dict,
    validate,
)
from .yaml_io import dump_yaml, load_config, load_yaml

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
    "setting",
    "to_dict",
    "validate",
]
