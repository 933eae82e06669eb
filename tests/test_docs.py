"""Generated documents are current: the JSON Schema editors load and the Markdown config reference."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from stackwise.config.export import json_schema, json_schema_text, markdown_reference

ROOT = Path(__file__).resolve().parents[1]


def test_schema_file_is_current() -> None:
    assert (ROOT / "docs" / "stackwise.schema.json").read_text(encoding="utf-8") == json_schema_text(), (
        "run `stackwise schema -o docs/stackwise.schema.json`"
    )


def test_other_schema_files_are_current() -> None:
    for kind in ("data_mixes", "model", "training", "data", "distributed", "distillation"):
        path = ROOT / "docs" / "schemas" / f"{kind}.schema.json"
        assert path.read_text(encoding="utf-8") == json_schema_text(kind), (
            f"run `stackwise schema --kind {kind} -o {path}`"
        )
        jsonschema.Draft7Validator.check_schema(json.loads(path.read_text(encoding="utf-8")))


def test_reference_is_current() -> None:
    assert (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8") == markdown_reference(), (
        "run `stackwise schema --format markdown -o docs/config-reference.md`"
    )


def test_schema_is_draft07_and_accepts_every_layout() -> None:
    schema = json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "$defs" not in json.dumps(schema)
    validator = jsonschema.Draft7Validator(schema)
    canonical = {"model": {"d_model": 256, "n_heads": 4}, "training": {"learning_rate": 1e-3, "betas": [0.9, 0.95]}}
    aliased = {"model_config": {"hidden_size": 256}, "train": {"lr": 1e-3}, "wandb_config": None}
    assert not list(validator.iter_errors(canonical))
    assert not list(validator.iter_errors(aliased))
    assert list(validator.iter_errors({"modle": {}}))
    assert list(validator.iter_errors({"training": {"mode": "sideways"}}))
