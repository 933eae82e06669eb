"""Which part of stackwise consumes each config field, and which fields nothing consumes yet.

The schema describes what the engine does: every field is either read by a named component
(`CONSUMED`) or listed in `NOT_YET` with the component that will read it. `stackwise train` calls
`unsupported_settings` first and refuses a config that sets a `NOT_YET` field, instead of ignoring it.
When a component starts reading a field, move the field from `NOT_YET` to `CONSUMED` (a test walks the
schema and fails when a field is in neither, or in both).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .errors import Issue
from .schema import StackwiseConfig

MODELS = "stackwise.models (model builders, issue #3)"
TRAIN = "stackwise.train (training engine and data pipeline, issue #4)"
STAGEWISE = "stackwise.train stage schedules (layer-wise, block-wise, fused, progressive, issue #5)"
KERNELS = "stackwise.kernels (Triton attention and PEER kernels, issue #6)"
DISTRIBUTED = "stackwise.train distributed wrappers (DDP / FSDP)"
DISTILL = "stackwise.train distillation (teacher losses)"
EVALS = "stackwise.train benchmark evaluation"

# Read today, by the config layer itself.
CONSUMED: dict[str, str] = {
    "model.name": "stackwise.config (label shown by `show` and `presets`)",
    "training.description": "stackwise.config (label shown by `show`)",
}

# Field path or prefix -> the component that will consume it. Longest prefix wins.
NOT_YET: dict[str, str] = {
    "model": MODELS,
    "model.attention_kernel": KERNELS,
    "model.peer_kernel": KERNELS,
    "training": TRAIN,
    "training.mode": STAGEWISE,
    "training.fusion_mode": STAGEWISE,
    "training.total_blocks": STAGEWISE,
    "training.block_size": STAGEWISE,
    "training.epochs_per_layer": STAGEWISE,
    "training.cache_activations": STAGEWISE,
    "training.qlora_enabled": STAGEWISE,
    "training.qlora_lr": STAGEWISE,
    "training.current_block_lr": STAGEWISE,
    "training.quantization_enabled": STAGEWISE,
    "training.quantization_type": STAGEWISE,
    "training.time_step_masking": STAGEWISE,
    "training.num_time_steps": STAGEWISE,
    "training.time_step_mask_fractions": STAGEWISE,
    "training.progressive": STAGEWISE,
    "training.save_fused_checkpoints": STAGEWISE,
    "data": TRAIN,
    "evaluation": TRAIN,
    "evaluation.evals": EVALS,
    "evaluation.evals_registry_path": EVALS,
    "logging": TRAIN,
    "distributed": DISTRIBUTED,
    "distillation": DISTILL,
    "training.stage": DISTILL,
}


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The sub-section class of a field typed `Section` or `Section | None` (not inside a list or dict)."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def field_paths(model: type[BaseModel] = StackwiseConfig, prefix: str = "") -> list[str]:
    """Dotted path of every leaf field of the schema (sub-sections expanded)."""
    out = []
    for name, info in model.model_fields.items():
        section = _section_type(info.annotation)
        out.extend(field_paths(section, f"{prefix}{name}.") if section else [f"{prefix}{name}"])
    return out


def consumer_of(path: str) -> tuple[str, bool]:
    """(component, consumed_now) for a dotted field path."""
    if path in CONSUMED:
        return CONSUMED[path], True
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in NOT_YET:
            return NOT_YET[prefix], False
    raise KeyError(f"no consumer recorded for {path}")


def _set_paths(model: BaseModel, prefix: str) -> list[str]:
    out = []
    for name in sorted(model.model_fields_set):
        value: Any = getattr(model, name)
        path = f"{prefix}.{name}"
        if isinstance(value, BaseModel):
            out.extend(_set_paths(value, path))
        else:
            out.append(path)
    return out


def unsupported_settings(cfg: StackwiseConfig) -> list[Issue]:
    """An error for each setting the config gives that no component consumes yet (what `train` refuses)."""
    issues = []
    for section in type(cfg).model_fields:
        for path in _set_paths(getattr(cfg, section), section):
            component, consumed = consumer_of(path)
            if not consumed:
                issues.append(Issue(path, f"`{path}` is not supported yet: it will be read by {component}"))
    return issues
