"""Every config in examples/ validates, points editors at the JSON Schema, and passes `stackwise validate`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from stackwise.cli import app
from stackwise.config import load_config
from stackwise.config.yamlio import load_yaml_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCHEMA = ROOT / "docs" / "stackwise.schema.json"
SCHEMA_COMMENT = "# yaml-language-server: $schema="
FILES = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))
IDS = [p.relative_to(EXAMPLES).as_posix() for p in FILES]


@pytest.fixture(autouse=True)
def _at_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # 001_data_mix.yaml names its datasets.yaml relative to the working directory, as guide 001 does.
    monkeypatch.chdir(ROOT)


def _example(name: str) -> Path:
    return EXAMPLES / name


def test_every_guide_has_examples() -> None:
    names = {p.relative_to(EXAMPLES).as_posix() for p in FILES}
    for guide in ("000", "001", "002", "003", "004"):
        assert any(n.startswith(guide) for n in names), f"no example for guide {guide}"
    expected = {
        "starter.yaml",
        "000_quick_start.yaml",
        "000_progressive_qlora.yaml",
        "000_layerwise.yaml",
        "000_blockwise.yaml",
        "000_fused.yaml",
        "000_quantization_qlora.yaml",
        "000_time_step_masking.yaml",
        "000_progressive_masking.yaml",
        "000_gpt2_small.yaml",
        "000_gpt2_medium.yaml",
        "000_custom_architecture.yaml",
        "000_data_settings.yaml",
        "000_tokenizer_integration.yaml",
        "000_minimal.yaml",
        "000_production.yaml",
        "000_debug_monitoring.yaml",
        "001_peer_mla.yaml",
        "001_datasets.yaml",
        "002_code_model/model/large.yaml",
        "002_code_model/training/code.yaml",
        "003_minimal.yaml",
        "003_full_pretraining.yaml",
        "003_memory_constrained.yaml",
        "004_hello_world.yaml",
        "004_efficient_standard.yaml",
    }
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_example_validates(path: Path) -> None:
    result = load_config(path)
    assert result.errors == [], "\n".join(map(str, result.errors))
    if result.kind == "config":
        assert result.config is not None


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_example_points_editors_at_the_schema(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith(SCHEMA_COMMENT), f"first line must be `{SCHEMA_COMMENT}<relative path>`"
    relative = lines[0].removeprefix(SCHEMA_COMMENT).strip()
    assert relative and not Path(relative).is_absolute() and "\\" not in relative
    assert Path(os.path.normpath(path.parent / relative)) == _schema_for(path)
    assert lines[1].startswith("# "), "the second line says which guide section the example reproduces"


def _schema_for(path: Path) -> Path:
    """The schema an editor should use: data-mix files and flat group files have their own."""
    if load_config(path).kind == "data_mixes":
        return ROOT / "docs" / "schemas" / "data_mixes.schema.json"
    if path.parent.name in ("model", "training", "data", "distributed", "distillation"):
        return ROOT / "docs" / "schemas" / f"{path.parent.name}.schema.json"
    return SCHEMA


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_example_is_valid_for_its_editor_schema(path: Path) -> None:
    # What stackwise accepts, the editor must not flag. Editors read YAML 1.2 (`1e-4` is a number), as stackwise does.
    schema = json.loads(_schema_for(path).read_text(encoding="utf-8"))
    data = load_yaml_file(path).data or {}
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(data)
    ]
    assert not errors, errors


def test_cli_validates_the_examples_folder() -> None:
    result = CliRunner().invoke(app, ["validate", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert f"{len(FILES)} file(s) checked, 0 invalid" in result.output


# -- what the examples say they do --------------------------------------------------------------------------------
def test_starter_is_a_small_causal_run_on_the_built_in_corpus() -> None:
    cfg = load_config(_example("starter.yaml")).unwrap()
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads) == (256, 4, 4)
    assert cfg.model.attention_mode == "causal"
    assert cfg.data.dataset_path is None and cfg.data.datasets is None and cfg.data.data_mix is None
    assert cfg.data.tokenizer_path == "bytes" and cfg.model.vocab_size >= 258
    assert cfg.training.seq_len == 256 <= cfg.model.max_seq_len
    assert cfg.training.max_steps == 200 and cfg.training.batch_size == 16
    assert cfg.training.warmup_ratio and cfg.training.device == "auto"
    assert cfg.training.run_id is None  # a new timestamped run directory each time the quickstart runs


def test_002_group_files_are_flat() -> None:
    model = load_config(_example("002_code_model/model/large.yaml")).unwrap().model
    assert (model.name, model.d_model, model.n_layers, model.n_heads) == ("large", 1600, 32, 25)
    assert model.norm_type == "rmsnorm"  # written as use_rmsnorm: true
    training = load_config(_example("002_code_model/training/code.yaml")).unwrap().training
    assert training.stage == "code"
    assert training.learning_rate == 5e-6 and isinstance(training.learning_rate, float)
    assert (training.num_train_epochs, training.max_grad_norm, training.compile) == (5, 1.0, True)


def test_002_composed_config_uses_its_own_group_files(tmp_path: Path) -> None:
    folder = tmp_path / "002_code_model"
    shutil.copytree(EXAMPLES / "002_code_model", folder)
    large = folder / "model" / "large.yaml"
    large.write_text(large.read_text(encoding="utf-8").replace("dropout: 0.0", "dropout: 0.1"), encoding="utf-8")
    cfg = load_config(folder / "config.yaml").unwrap()
    assert cfg.model.dropout == 0.1  # the built-in preset `large` has 0.0
    assert cfg.training.stage == "code" and cfg.training.seq_len == 1024
    assert cfg.data.format == "npy" and cfg.data.dataset_path == "code_train_large.npy"


def test_001_example_reads_the_guide_names() -> None:
    cfg = load_config(_example("001_peer_mla.yaml")).unwrap()
    assert cfg.model.attention_type == "mla" and cfg.model.use_peer and cfg.model.peer_start_layer == 2
    assert cfg.model.peer.num_experts == 1024 * 1024
    assert [d.weight for d in cfg.data.datasets] == [0.7, 0.2]
    assert cfg.training.precision == "fp16" and cfg.training.max_steps == 100000
    assert cfg.evaluation.batch_size == 16 and "hellaswag" in cfg.evaluation.evals
    assert cfg.logging.wandb.enabled and cfg.logging.wandb.project == "llm-research"


def test_001_data_mix_example_checks_its_mix() -> None:
    result = load_config(_example("001_data_mix.yaml"))
    assert result.valid and not [i for i in result.issues if i.path.startswith("data.")]
    mixes = load_config(_example("001_datasets.yaml"))
    assert mixes.kind == "data_mixes" and mixes.valid


def test_004_hello_world_composes_presets_and_overrides() -> None:
    cfg = load_config(_example("004_hello_world.yaml")).unwrap()
    assert cfg.model.name == "smollm2_135m"
    assert cfg.training.stage == "continue_pretrain" and cfg.training.max_steps == 10
    assert cfg.training.warmup_steps < cfg.training.max_steps
    assert cfg.distributed.strategy == "single"
    fsdp = load_config(_example("004_efficient_standard.yaml")).unwrap()
    assert fsdp.model.name == "qwen3_4b" and fsdp.distributed.strategy == "fsdp"
