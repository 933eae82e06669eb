"""Building blocks shared by the schema sections: a strict base model, field helpers, value synonyms.

Field descriptions are written once, here in the schema, and reused by the JSON Schema, the CLI and
`docs/config-reference.md`. A "typical" range (from a guide's defaults table) is stored on the field
and turned into a warning, never an error, by `stackwise.config.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Section(BaseModel):
    """A frozen, strict config section: unknown keys are errors, values are validated on assignment."""

    # coerce_numbers_to_str: `run_id: ${env:SLURM_JOB_ID}` gives a number, but run_id is a name.
    # allow_inf_nan=False: `.inf` is a YAML float, never a sensible setting.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, coerce_numbers_to_str=True, allow_inf_nan=False
    )


def field(
    default: Any = ...,
    description: str = "",
    *,
    factory: Any = None,
    typical: tuple[float, float] | None = None,
    guide: str | None = None,
    **constraints: Any,
) -> Any:
    """A pydantic `Field` with the description and the guide's typical range recorded for docs and warnings."""
    extra: dict[str, Any] = {}
    if typical is not None:
        extra["typical"] = list(typical)
    if guide is not None:
        extra["guide"] = guide
    if factory is not None:  # a sub-section: built when needed, not at import
        return Field(default_factory=factory, description=description, json_schema_extra=extra or None, **constraints)
    return Field(default, description=description, json_schema_extra=extra or None, **constraints)


def typical_range(info: Any) -> tuple[float, float, str | None] | None:
    """The (low, high, guide) typical range recorded on a pydantic FieldInfo, if any."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else None
    if not extra or "typical" not in extra:
        return None
    low, high = extra["typical"]
    return low, high, extra.get("guide")


def synonyms(mapping: Mapping[str, str]) -> BeforeValidator:
    """Accept the other spellings the guides use for an enum value (case-insensitive), e.g. `float16` for `fp16`."""

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower()
            return mapping.get(key, key)
        return value

    normalise.synonyms = tuple(mapping)  # type: ignore[attr-defined]  # listed in the JSON Schema too
    return BeforeValidator(normalise)


def reject(values: Mapping[str, str]) -> BeforeValidator:
    """Reject documented-but-unsupported values with a message that says why and what to use instead."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in values:
            raise ValueError(values[value.strip().lower()])
        return value

    return BeforeValidator(check)


PRECISION_SYNONYMS = {
    "float32": "fp32",
    "full": "fp32",
    "32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "16": "fp16",
    "bfloat16": "bf16",
}


def section_type(annotation: Any) -> type[BaseModel] | None:
    """The sub-section class of a field typed `Section` or `Section | None` (not inside a list or dict)."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
