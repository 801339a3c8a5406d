"""One YAML file describes a run: YAML -> validated, typed `RunConfig`.

Every section is a pydantic model that forbids unknown keys, so a typo fails
loudly with the closest valid key instead of silently taking a default.  Keys
under ``training`` keep the names of ``transformers.TrainingArguments``; any
other TrainingArguments field is accepted and passed through unchanged.
"""

from lmtune.config.data import DataConfig, DataSource
from lmtune.config.loader import apply_override, dump_config, load_config, read_yaml, validate_config
from lmtune.config.messages import training_argument_names
from lmtune.config.run import ContinualConfig, EvalConfig, RunConfig, TrainingConfig
from lmtune.config.sections import (
    DATA_FORMATS,
    EMBEDDED_MODEL,
    METRICS,
    AdaLoraConfig,
    FreezeConfig,
    IA3Config,
    LoraConfig,
    ModelConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    PTuningConfig,
)
from lmtune.config.sweep import SweepConfig

__all__ = [
    "DATA_FORMATS", "EMBEDDED_MODEL", "METRICS", "AdaLoraConfig", "ContinualConfig", "DataConfig", "DataSource",
    "EvalConfig", "FreezeConfig", "IA3Config", "LoraConfig", "ModelConfig", "PTuningConfig", "PrefixTuningConfig",
    "PromptTuningConfig", "RunConfig", "SweepConfig", "TrainingConfig", "apply_override", "dump_config",
    "load_config", "read_yaml", "training_argument_names", "validate_config",
]  # fmt: skip
