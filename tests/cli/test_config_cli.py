"""The config commands of the `stackwise` CLI: validate, show, migrate, schema, presets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

import stackwise
from stackwise.cli import app
from stackwise.config import SECTIONS, load_config
from tests.helpers import write

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "STACKWISE_CONFIG_DIR": None})


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write(
        tmp_path / "good.yaml",
        """
        model:
          d_model: 512
          n_heads: 8
        training:
          lr: 1e-4
          batch_size: 4
        """,
    )


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    return write(
        tmp_path / "bad.yaml",
        """
        training:
          batch_size: 4
          learning_rate: -1
        """,
    )


@pytest.fixture
def warn(tmp_path: Path) -> Path:
    # legal, but outside the typical range: a warning only
    return write(
        tmp_path / "warn.yaml",
        """
        training:
          learning_rate: 0.5
        """,
    )


# -- validate: exit codes ------------------------------------------------------------------------------------------
def test_validate_valid_file_exits_0(good: Path) -> None:
    result = invoke("validate", good)
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout


def test_validate_invalid_file_exits_1(bad: Path) -> None:
    result = invoke("validate", bad)
    assert result.exit_code == 1, result.output
    assert "invalid" in result.stdout
    assert "training.learning_rate" in result.stdout


def test_validate_one_invalid_among_several_exits_1(good: Path, bad: Path) -> None:
    assert invoke("validate", good, bad).exit_code == 1


def test_validate_warnings_only(warn: Path) -> None:
    result = invoke("validate", warn)
    assert result.exit_code == 0, result.output
    assert "warning" in result.stdout
    strict = invoke("validate", "--strict", warn)
    assert strict.exit_code == 1, strict.output


def test_validate_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2, result.output


def test_validate_missing_file_among_valid_ones_exits_2(good: Path, tmp_path: Path) -> None:
    assert invoke("validate", good, tmp_path / "nope.yaml").exit_code == 2


def test_validate_unknown_option_is_a_usage_error(good: Path) -> None:
    result = invoke("validate", "--no-such-option", good)
    assert result.exit_code == 2


def test_validate_without_arguments_is_a_usage_error() -> None:
    assert invoke("validate").exit_code == 2


def _json_files(result) -> list[dict]:
    payload = json.loads(result.stdout)
    return payload["files"]


def test_validate_expands_directories(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    write(folder / "a.yaml", "training:\n  lr: 1e-4\n")
    write(folder / "b.yaml", "training:\n  batch_size: 2\n")
    write(folder / "notes.txt", "not: yaml: at: all: [\n")
    result = invoke("validate", "--format", "json", folder)
    assert result.exit_code == 0, result.output
    names = sorted(Path(f["file"]).name for f in _json_files(result))
    assert names == ["a.yaml", "b.yaml"]


def test_validate_expands_globs(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "training:\n  lr: 1e-4\n")
    write(tmp_path / "b.yaml", "training:\n  batch_size: 0\n")
    write(tmp_path / "c.json", "{}\n")
    result = invoke("validate", "--format", "json", str(tmp_path / "*.yaml"))
    assert result.exit_code == 1, result.output
    files = {Path(f["file"]).name: f for f in _json_files(result)}
    assert set(files) == {"a.yaml", "b.yaml"}
    assert files["a.yaml"]["valid"] is True
    assert files["b.yaml"]["valid"] is False


def test_validate_glob_matching_nothing_is_missing(tmp_path: Path) -> None:
    assert invoke("validate", str(tmp_path / "*.yaml")).exit_code == 2


def test_validate_overrides_apply_to_every_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "training:\n  lr: 1e-4\n")
    b = write(tmp_path / "b.yaml", "model:\n  d_model: 512\n  n_heads: 8\n")
    assert invoke("validate", a, b).exit_code == 0
    result = invoke("validate", "--format", "json", a, b, "training.batch_size=0")
    assert result.exit_code == 1, result.output
    files = _json_files(result)
    assert len(files) == 2
    for entry in files:
        assert entry["valid"] is False
        assert [e["path"] for e in entry["errors"]] == ["training.batch_size"]
    assert invoke("validate", a, b, "training.lr=1e-3", "model=tiny").exit_code == 0


# -- validate: output formats -----------------------------------------------------------------------------------------
def test_validate_json_format(good: Path, bad: Path, warn: Path) -> None:
    result = invoke("validate", "--format", "json", good, bad, warn)
    assert result.exit_code == 1
    payload = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert isinstance(payload, dict) and list(payload) == ["files"]
    files = payload["files"]
    assert [Path(f["file"]).name for f in files] == ["good.yaml", "bad.yaml", "warn.yaml"]
    for entry in files:
        assert {"file", "valid", "errors", "warnings"} <= set(entry)
        assert isinstance(entry["file"], str)
        assert isinstance(entry["valid"], bool)
        assert isinstance(entry["errors"], list) and isinstance(entry["warnings"], list)
        for issue in entry["errors"] + entry["warnings"]:
            assert {"path", "line", "column", "message"} <= set(issue)
            assert isinstance(issue["path"], str)
            assert isinstance(issue["message"], str) and issue["message"]
            assert issue["line"] is None or isinstance(issue["line"], int)
            assert issue["column"] is None or isinstance(issue["column"], int)
    good_entry, bad_entry, warn_entry = files
    assert good_entry["valid"] is True and good_entry["errors"] == []
    assert bad_entry["valid"] is False
    err = bad_entry["errors"][0]
    assert (err["path"], err["line"], err["column"]) == ("training.learning_rate", 3, 3)
    assert warn_entry["valid"] is True and warn_entry["errors"] == []
    assert warn_entry["warnings"][0]["path"] == "training.learning_rate"
    assert warn_entry["warnings"][0]["line"] == 2


def test_validate_json_format_for_a_missing_file(good: Path, tmp_path: Path) -> None:
    result = invoke("validate", "--format", "json", good, tmp_path / "nope.yaml")
    assert result.exit_code == 2
    files = json.loads(result.stdout)["files"]
    assert {Path(f["file"]).name: f["valid"] for f in files} == {"good.yaml": True, "nope.yaml": False}


def test_validate_json_format_for_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "training:\n  lr: 1e-4\n bad: [\n")
    result = invoke("validate", "-f", "json", path)
    assert result.exit_code == 1
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["valid"] is False
    assert entry["errors"][0]["line"] == 3


GITHUB = re.compile(r"^::(error|warning) file=([^,]+),line=(\d+),col=(\d+),title=([^:]+)::(.+)$")


def test_validate_github_format(bad: Path, warn: Path) -> None:
    result = invoke("validate", "--format", "github", bad, warn)
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines
    parsed = [GITHUB.match(line) for line in lines]
    assert all(parsed), lines
    errors = [m for m in parsed if m and m.group(1) == "error"]
    assert len(errors) == 1
    m = errors[0]
    assert m.group(2) == str(bad)
    assert (m.group(3), m.group(4)) == ("3", "3")
    assert "training.learning_rate" in m.group(5)
    warnings = [m for m in parsed if m and m.group(1) == "warning"]
    assert warnings and warnings[0].group(2) == str(warn) and warnings[0].group(3) == "2"


def test_validate_github_format_valid_file_prints_nothing(good: Path) -> None:
    result = invoke("validate", "--format", "github", good)
    assert result.exit_code == 0
    assert result.stdout.strip() == ""


# -- show and migrate -----------------------------------------------------------------------------------------------
def test_show_prints_canonical_yaml_with_defaults(good: Path) -> None:
    result = invoke("show", good)
    assert result.exit_code == 0, result.output
    assert "learning_rate:" in result.stdout
    assert re.search(r"^\s*lr:", result.stdout, re.M) is None
    data = yaml.safe_load(result.stdout)
    assert set(data) == set(SECTIONS)
    assert data["training"]["learning_rate"] == pytest.approx(1e-4)
    assert data["training"]["batch_size"] == 4
    assert data["training"]["seed"] == 42  # a default, filled in
    assert data["model"]["d_model"] == 512


def test_show_applies_overrides(good: Path) -> None:
    result = invoke("show", good, "training.lr=1e-3", "model=tiny")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["training"]["learning_rate"] == pytest.approx(1e-3)
    assert data["model"]["n_layers"] == 4


def test_show_invalid_file_exits_1(bad: Path) -> None:
    result = invoke("show", bad)
    assert result.exit_code == 1
    assert result.stdout.strip() == ""
    assert "training.learning_rate" in result.stderr


def test_show_missing_file_exits_2(tmp_path: Path) -> None:
    assert invoke("show", tmp_path / "nope.yaml").exit_code == 2


def test_migrate_003_layout(tmp_path: Path) -> None:
    old = write(
        tmp_path / "old.yaml",
        """
        train:
          total_steps: 1000
          micro_batch_size: 4
          grad_accum_steps: 8
          lr: 3e-4
        """,
    )
    result = invoke("migrate", old)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert set(data) == {"training"}
    assert data["training"] == {
        "learning_rate": pytest.approx(3e-4),
        "batch_size": 4,
        "gradient_accumulation_steps": 8,
        "max_steps": 1000,
    }
    assert "lr" not in data["training"] and "train" not in data
    assert "distillation" not in result.stdout
    new = tmp_path / "new.yaml"
    new.write_text(result.stdout, encoding="utf-8")
    check = invoke("validate", "--strict", new)
    assert check.exit_code == 0, check.output
    assert load_config(new).config == load_config(old).config


def test_migrate_001_layout(tmp_path: Path) -> None:
    old = write(
        tmp_path / "old.yaml",
        """
        model_config:
          hidden_size: 512
          num_attention_heads: 8
        train_config:
          per_device_train_batch_size: 16
        wandb_config:
          project: p
        """,
    )
    result = invoke("migrate", old)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["model"] == {"d_model": 512, "n_heads": 8}
    assert data["training"] == {"batch_size": 16}
    assert data["logging"]["wandb"]["enabled"] is True
    new = tmp_path / "new.yaml"
    new.write_text(result.stdout, encoding="utf-8")
    assert invoke("validate", new).exit_code == 0
    assert load_config(new).config == load_config(old).config


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("training/flat.yaml", "grad_clip: 0.5\nnum_epochs: 3\nuse_amp: false\ndata_file: data/train.txt\n"),
        (
            "model/m.yaml",
            "hidden_size: 512\nnum_attention_heads: 8\nnum_kv_heads: 2\nhidden_act: relu2\n"
            "quantization: {weight_bits: 1.58}\nsubln: {enabled: true}\nteacher: {pretrained: a/b}\n",
        ),
        ("w.yaml", "wandb_config: null\n"),
    ],
)
def test_migrate_output_loads_to_the_same_config(tmp_path: Path, name: str, text: str) -> None:
    old = write(tmp_path / name, text)
    result = invoke("migrate", old)
    assert result.exit_code == 0, result.output
    new = tmp_path / "migrated.yaml"
    new.write_text(result.stdout, encoding="utf-8")
    assert set(yaml.safe_load(result.stdout)) <= set(SECTIONS)
    migrated = load_config(new)
    assert migrated.valid, migrated.issues
    assert migrated.config == load_config(old).config


def test_migrate_invalid_file_exits_1(bad: Path) -> None:
    assert invoke("migrate", bad).exit_code == 1


# -- schema -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> dict:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schema_is_draft07(schema: dict) -> None:
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)


def test_schema_accepts_a_simple_config(schema: dict) -> None:
    validator = jsonschema.Draft7Validator(schema)
    config = {"model": {"d_model": 512, "n_heads": 8}, "training": {"learning_rate": 1e-4, "batch_size": 4}}
    assert list(validator.iter_errors(config)) == []
    alias_layout = {"train": {"lr": 1e-4, "total_steps": 100}, "defaults": [{"model": "tiny"}, "_self_"]}
    assert list(validator.iter_errors(alias_layout)) == []


def test_schema_accepts_a_full_dumped_config(schema: dict) -> None:
    from stackwise.config import StackwiseConfig

    validator = jsonschema.Draft7Validator(schema)
    assert list(validator.iter_errors(StackwiseConfig().to_dict())) == []


@pytest.mark.parametrize(
    "text",
    [
        "model:\n  d_model: 512\n  n_heads: 8\ntraining:\n  # lr: 1e-4 (all commented out: an empty section)\n",
        "model:\n  ffn_activation: swiglu\n  norm_type: rms\n",
    ],
    ids=["empty-section", "value-synonyms"],
)
def test_schema_accepts_what_the_loader_accepts(schema: dict, tmp_path: Path, text: str) -> None:
    # The schema is for editors: a file that `stackwise validate` accepts must not be flagged by it.
    path = write(tmp_path / "c.yaml", text)
    assert load_config(path).valid
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(text))]
    assert errors == []


def test_schema_rejects_unknown_keys_and_bad_values(schema: dict) -> None:
    validator = jsonschema.Draft7Validator(schema)
    assert not validator.is_valid({"model": {"d_model": 512}, "bogus": 1})
    assert not validator.is_valid({"training": {"batch_size": 0}})
    assert not validator.is_valid({"training": {"batch_size": "four"}})


def test_schema_output_option(tmp_path: Path, schema: dict) -> None:
    out = tmp_path / "schema.json"
    result = invoke("schema", "--output", out)
    assert result.exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8")) == schema


def test_schema_markdown() -> None:
    result = invoke("schema", "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "## ModelConfig" in result.stdout
    assert "## TrainingConfig" in result.stdout
    assert "`learning_rate`" in result.stdout


# -- presets and version ------------------------------------------------------------------------------------------------
def test_presets_lists_builtin_options() -> None:
    result = invoke("presets")
    assert result.exit_code == 0, result.output
    for name in ("smollm2_135m", "tiny", "fsdp_multi", "stage2_pretrain"):
        assert name in result.stdout


def test_presets_lists_options_from_config_dir(tmp_path: Path) -> None:
    write(tmp_path / "model" / "my_special_model.yaml", "# Mine.\nd_model: 64\n")
    result = invoke("presets", "--config-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "my_special_model" in result.stdout


def test_version_in_process() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert stackwise.__version__ in result.stdout


def test_version_subprocess() -> None:
    out = subprocess.run([sys.executable, "-m", "stackwise", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"stackwise {stackwise.__version__}"
