"""YAML reading: YAML 1.2 floats, duplicate keys, syntax errors, `${env:...}` interpolation, key positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackwise.config import load_config
from stackwise.config.yamlio import load_yaml_text
from tests.helpers import write


# -- scalars ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-4", 1e-4), ("3e-4", 3e-4), ("1E5", 1e5), ("-2.5e-3", -2.5e-3), ("+1e3", 1e3), ("0.5", 0.5)],
)
def test_exponent_floats_load_as_floats(text: str, expected: float) -> None:
    doc = load_yaml_text(f"value: {text}\n", "x.yaml")
    assert not doc.issues
    assert isinstance(doc.data["value"], float)
    assert doc.data["value"] == pytest.approx(expected)


@pytest.mark.parametrize("text", ["1.2.3", "v1e3", "'1e-4'", '"1e-4"', "1e", "e5"])
def test_non_numbers_and_quoted_numbers_stay_strings(text: str) -> None:
    doc = load_yaml_text(f"value: {text}\n", "x.yaml")
    assert not doc.issues
    assert isinstance(doc.data["value"], str)
    assert doc.data["value"] == text.strip("'\"")


def test_integers_stay_integers() -> None:
    doc = load_yaml_text("a: 1000\nb: -3\nc: true\n", "x.yaml")
    assert doc.data == {"a": 1000, "b": -3, "c": True}
    assert type(doc.data["a"]) is int


def test_exponent_floats_inside_flow_collections() -> None:
    doc = load_yaml_text("a: [1e-4, 2E-3]\nb: {c: 5e2}\n", "x.yaml")
    assert doc.data == {"a": [1e-4, 2e-3], "b": {"c": 500.0}}
    assert all(isinstance(v, float) for v in doc.data["a"])


def test_exponent_learning_rate_in_a_config_is_a_float(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        training:
          lr: 3e-4
        """,
    )
    result = load_config(path)
    assert result.valid, result.issues
    assert result.config is not None
    assert isinstance(result.config.training.learning_rate, float)
    assert result.config.training.learning_rate == pytest.approx(3e-4)


# -- duplicate keys and syntax errors ------------------------------------------------------------------------
def test_duplicate_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dup.yaml",
        """
        training:
          lr: 1e-4
          batch_size: 4
          lr: 2e-4
        """,
    )
    result = load_config(path)
    assert not result.valid
    assert result.config is None
    dups = [i for i in result.errors if "duplicate" in i.message]
    assert len(dups) == 1
    issue = dups[0]
    assert "line 2" in issue.message and "line 4" in issue.message
    assert issue.line == 4
    assert issue.column == 3
    assert issue.file == str(path)
    assert issue.path.endswith("lr")


def test_duplicate_top_level_section_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dup.yaml",
        """
        model:
          d_model: 512
          n_heads: 8
        model:
          d_model: 1024
          n_heads: 8
        """,
    )
    result = load_config(path)
    assert not result.valid
    issue = next(i for i in result.errors if "duplicate" in i.message)
    assert "line 1" in issue.message and "line 4" in issue.message
    assert issue.line == 4


def test_syntax_error_reports_its_line_without_raising(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        """
        training:
          lr: 1e-4
         batch_size: 4
        """,
    )
    result = load_config(path)  # must not raise
    assert not result.valid
    assert result.config is None
    issue = result.errors[0]
    assert "syntax" in issue.message.lower()
    assert issue.line == 3
    assert issue.column is not None
    assert issue.file == str(path)


def test_unclosed_flow_sequence_is_a_syntax_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        """
        training:
          betas: [0.9, 0.95
          lr: 1e-4
        """,
    )
    result = load_config(path)
    assert not result.valid
    assert any("syntax" in i.message.lower() and i.line is not None for i in result.errors)


# -- ${env:...} interpolation -----------------------------------------------------------------------------
def test_env_interpolation_uses_default_when_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKWISE_TEST_LR", raising=False)
    path = write(
        tmp_path / "c.yaml",
        """
        training:
          learning_rate: ${env:STACKWISE_TEST_LR,1e-4}
        """,
    )
    result = load_config(path)
    assert result.valid, result.issues
    assert result.config is not None
    assert result.config.training.learning_rate == pytest.approx(1e-4)


def test_env_interpolation_uses_the_variable_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACKWISE_TEST_LR", "2e-3")
    path = write(
        tmp_path / "c.yaml",
        """
        training:
          learning_rate: ${env:STACKWISE_TEST_LR,1e-4}
        """,
    )
    result = load_config(path)
    assert result.valid, result.issues
    assert result.config is not None
    assert result.config.training.learning_rate == pytest.approx(2e-3)


def test_whole_value_reference_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKWISE_TEST_LR", raising=False)
    monkeypatch.setenv("STACKWISE_TEST_STEPS", "1000")
    doc = load_yaml_text("lr: ${env:STACKWISE_TEST_LR,1e-4}\nsteps: ${env:STACKWISE_TEST_STEPS}\n", "x.yaml")
    assert not doc.issues
    assert isinstance(doc.data["lr"], float) and doc.data["lr"] == pytest.approx(1e-4)
    assert doc.data["steps"] == 1000 and type(doc.data["steps"]) is int


def test_reference_inside_a_string_is_substituted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKWISE_TEST_NAME", raising=False)
    doc = load_yaml_text("run_id: run-${env:STACKWISE_TEST_NAME,abc}\n", "x.yaml")
    assert doc.data["run_id"] == "run-abc"
    monkeypatch.setenv("STACKWISE_TEST_NAME", "xyz")
    doc = load_yaml_text("run_id: run-${env:STACKWISE_TEST_NAME,abc}\n", "x.yaml")
    assert doc.data["run_id"] == "run-xyz"


def test_unset_variable_without_default_is_an_error_at_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKWISE_TEST_UNSET", raising=False)
    path = write(
        tmp_path / "c.yaml",
        """
        training:
          batch_size: 4
          run_id: ${env:STACKWISE_TEST_UNSET}
        """,
    )
    result = load_config(path)
    assert not result.valid
    issue = next(i for i in result.errors if "STACKWISE_TEST_UNSET" in i.message)
    assert issue.line == 3
    assert issue.column == 3
    assert issue.file == str(path)
    assert issue.path == "training.run_id"


def test_non_env_interpolation_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        training:
          run_id: ${foo.bar}
        """,
    )
    result = load_config(path)
    assert not result.valid
    issue = result.errors[0]
    assert "${foo.bar}" in issue.message
    assert "only" in issue.message and "env" in issue.message
    assert issue.line == 2


# -- positions ------------------------------------------------------------------------------------------------
def test_positions_of_nested_keys_in_the_document() -> None:
    doc = load_yaml_text("model:\n  mla:\n    kv_lora_rank: 3\n", "x.yaml")
    loc = doc.marks[("model", "mla", "kv_lora_rank")]
    assert (loc.line, loc.column) == (3, 5)
    assert (doc.marks[("model", "mla")].line, doc.marks[("model", "mla")].column) == (2, 3)


def test_nested_key_issue_has_the_right_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        model:
          d_model: 512
          n_heads: 8
          mla:
            kv_lora_rank: 0
        """,
    )
    result = load_config(path)
    assert not result.valid
    issue = next(i for i in result.errors if i.path == "model.mla.kv_lora_rank")
    assert (issue.line, issue.column) == (5, 5)
    assert issue.file == str(path)


def test_second_section_field_issue_position(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        model:
          d_model: 512
          n_heads: 8
        training:
          seed: 1
          batch_size: 0
        """,
    )
    result = load_config(path)
    issue = next(i for i in result.errors if i.path == "training.batch_size")
    assert (issue.line, issue.column) == (6, 3)
