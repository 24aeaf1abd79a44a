"""Typed configs from YAML: a generic validated-dataclass layer (:mod:`.typed`) that every task
reuses, and the classification schema (:mod:`.classification`)."""

from .classification import (
    CalibrateConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    ScheduleConfig,
    TrainConfig,
    TrainingConfig,
    load_config,
)
from .typed import (
    TASKS,
    ConfigError,
    UnknownKeyError,
    apply_overrides,
    build_config,
    from_dict,
    setting,
    to_dict,
    validate,
)
from .yaml_io import dump_yaml, load_yaml, task_of

__all__ = [
    "TASKS",
    "CalibrateConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainingConfig",
    "UnknownKeyError",
    "apply_overrides",
    "build_config",
    "dump_yaml",
    "from_dict",
    "load_config",
    "load_yaml",
    "setting",
    "task_of",
    "to_dict",
    "validate",
]
