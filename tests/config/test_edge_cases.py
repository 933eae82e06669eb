"""Edge cases found in review: each once misbehaved."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from stackwise.cli import app
from stackwise.config import StackwiseConfig, load_config
from tests.helpers import write


def test_list_valued_override_is_not_a_glob(tmp_path: Path) -> None:
    path = write(tmp_path, "training: {max_steps: 10}\n")
    result = CliRunner().invoke(app, ["validate", str(path), "training.betas=[0.8,0.9]"])
    assert result.exit_code == 0, result.output


def test_malformed_overrides_are_usage_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "training: {max_steps: 10}\n")
    for bad in ("model=", "=5", "a..b=1"):
        assert CliRunner().invoke(app, ["validate", str(path), bad]).exit_code == 2, bad


def test_bad_entry_in_a_mapping_of_sections_does_not_silence_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        training:
          max_steps: 24
          min_lr: 1.0
          progressive:
            enabled: true
            qlora_strategy: variable
            qlora_configs:
              0: {rank: 0, alpha: 16}
        """,
    )
    errors = {(i.path, i.line) for i in load_config(path).errors}
    assert errors == {("training.progressive.qlora_configs[0].rank", 8), ("training.min_lr", 3)}


def test_two_bad_items_of_one_list_keep_their_own_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  datasets:\n    - {path: a, streaming: maybe}\n    - {path: b, weight: -1}\n")
    errors = {(i.path, i.line) for i in load_config(path).errors}
    assert errors == {("data.datasets[0].streaming", 3), ("data.datasets[1].weight", 4)}


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  <<: {d_model: 512, n_heads: 8}\n  d_model: 1024\n")
    result = load_config(path)
    assert result.valid and result.config.model.d_model == 1024 and result.config.model.n_heads == 8


def test_numbers_are_accepted_for_names_and_inf_is_not(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JOB", "12345")
    result = load_config(write(tmp_path, "training:\n  run_id: ${env:JOB}\n  max_steps: 10\n"))
    assert result.valid and result.config.training.run_id == "12345"
    bad = load_config(write(tmp_path, "training: {lr: .inf}\n", "inf.yaml"))
    assert [i.path for i in bad.errors] == ["training.learning_rate"]


def test_updated_takes_values_as_given() -> None:
    cfg = StackwiseConfig.from_dict({"training": {"max_steps": 10}})
    new = cfg.updated({"data.text_template": "{question} {answer}", "training.run_id": "123"})
    assert new.data.text_template == "{question} {answer}" and new.training.run_id == "123"


def test_shown_config_validates_without_new_warnings(tmp_path: Path) -> None:
    source = write(tmp_path, "model: {d_model: 512, n_layers: 6, n_heads: 8}\ntraining: {max_steps: 10}\n")
    shown = CliRunner().invoke(app, ["show", str(source)])
    assert shown.exit_code == 0, shown.output
    result = load_config(write(tmp_path, shown.stdout, "shown.yaml"))
    assert result.valid and result.warnings == [], [str(w) for w in result.warnings]


def test_layerwise_means_one_layer_per_block_even_via_total_blocks(tmp_path: Path) -> None:
    path = write(tmp_path, "model: {n_layers: 12}\ntraining: {mode: layerwise, total_blocks: 3, max_steps: 10}\n")
    assert [i.path for i in load_config(path).errors] == ["training.total_blocks"]


def test_guide_002_model_size_and_001_mla_rope_theta(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "model_size: tiny\ntraining: {max_steps: 10}\n")).unwrap()
    assert cfg.model.d_model == 256 and cfg.model.name == "tiny"
    cfg = load_config(write(tmp_path, "model_config:\n  mla_config: {rope_theta: 5000.0}\n", "mla.yaml")).unwrap()
    assert cfg.model.rope_theta == 5000.0 and cfg.model.attention_type == "mla"


def test_misspelled_section_gets_a_suggestion(tmp_path: Path) -> None:
    (issue,) = load_config(write(tmp_path, "modle:\n  d_model: 512\n")).errors
    assert "did you mean `model`?" in issue.message and issue.line == 1
