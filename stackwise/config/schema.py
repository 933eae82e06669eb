"""`StackwiseConfig`: the frozen, validated root of a stackwise config, and its YAML round trip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo, model_validator

from .fields import Section, field
from .model import ModelConfig
from .sections import DataConfig, DistillationConfig, DistributedConfig, EvaluationConfig, LoggingConfig
from .training import TrainingConfig

SECTIONS = ("model", "training", "data", "evaluation", "logging", "distributed", "distillation")
SKIP_RULES = "stackwise_skip_rules"


class StackwiseConfig(Section):
    """A whole stackwise config. Build it with `from_yaml`, `from_dict`, or the constructor; it is immutable."""

    model: ModelConfig = field(factory=ModelConfig, description="Model architecture.")
    training: TrainingConfig = field(
        factory=TrainingConfig, description="Training schedule, optimisation and run directory."
    )
    data: DataConfig = field(factory=DataConfig, description="Training data and tokenizer.")
    evaluation: EvaluationConfig = field(factory=EvaluationConfig, description="Periodic evaluation.")
    logging: LoggingConfig = field(factory=LoggingConfig, description="Metric sinks (JSONL, TensorBoard, W&B).")
    distributed: DistributedConfig = field(factory=DistributedConfig, description="Single device, DDP or FSDP.")
    distillation: DistillationConfig = field(
        factory=DistillationConfig, description="Distillation from a teacher model."
    )

    @model_validator(mode="after")
    def _cross_field_rules(self, info: ValidationInfo) -> StackwiseConfig:
        # The file loader runs the rules itself so that it can report them next to field errors;
        # every other way of building a config (constructor, from_dict, updated) runs them here.
        if info.context and info.context.get(SKIP_RULES):
            return self
        from .rules import run_rules

        errors = [issue for issue in run_rules(self) if issue.severity == "error"]
        if errors:
            raise ValueError("; ".join(f"{e.path}: {e.message}" for e in errors))
        return self

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_yaml(
        cls, path: str | Path, overrides: Sequence[str] = (), *, config_dirs: Sequence[str | Path] = ()
    ) -> StackwiseConfig:
        """Load, compose and validate a YAML file; raise `ConfigError` listing every problem with its line."""
        from .loader import load_config

        return load_config(path, overrides, config_dirs=config_dirs).unwrap()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], overrides: Sequence[str] = ()) -> StackwiseConfig:
        """Validate a dict in any supported layout (aliases allowed), as if it were a YAML file."""
        from .loader import load_mapping

        return load_mapping(data, overrides).unwrap()

    def updated(self, changes: Mapping[str, Any] | Sequence[str]) -> StackwiseConfig:
        """A changed copy, validated again: `cfg.updated({"training.lr": 1e-3})` or `cfg.updated(["model=tiny"])`."""
        from .loader import load_mapping

        # Only what was set, so that defaults stay defaults (warnings and `migrate` depend on that).
        current = self.model_dump(mode="json", exclude_unset=True)
        if isinstance(changes, Mapping):
            return load_mapping(current, values=changes).unwrap()
        return load_mapping(current, list(changes)).unwrap()

    # -- output --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The full canonical config as plain Python data (lists, not tuples), every default filled in."""
        return self.model_dump(mode="json")

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The canonical YAML text; also written to `path` when given."""
        from .yamlio import dump_yaml

        text = dump_yaml(self.to_dict())
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text
