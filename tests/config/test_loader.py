"""Composition: overrides, config groups, `defaults:` lists, other guides' layouts, error locations, round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackwise.config import SECTIONS, ConfigError, LoadResult, StackwiseConfig, load_config
from stackwise.config.loader import COMMAND_LINE
from tests.helpers import write


def ok(result: LoadResult) -> StackwiseConfig:
    assert result.valid, [str(i) for i in result.errors]
    assert result.config is not None
    return result.config


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(
        tmp_path / "config.yaml",
        """
        training:
          lr: 1e-4
          batch_size: 4
        """,
    )


@pytest.fixture(autouse=True)
def _no_config_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACKWISE_CONFIG_DIR", raising=False)


# -- key=value overrides --------------------------------------------------------------------------------------
def test_override_sets_a_value_through_an_alias(base: Path) -> None:
    cfg = ok(load_config(base, ["training.lr=1e-3"]))
    assert cfg.training.learning_rate == pytest.approx(0.001)
    assert cfg.training.batch_size == 4


def test_override_with_canonical_name(base: Path) -> None:
    cfg = ok(load_config(base, ["training.learning_rate=2e-4", "model.n_layers=6"]))
    assert cfg.training.learning_rate == pytest.approx(2e-4)
    assert cfg.model.n_layers == 6


def test_invalid_override_is_reported_on_the_command_line(base: Path) -> None:
    result = load_config(base, ["training.batch_size=-2"])
    assert not result.valid
    assert result.config is None
    issue = next(i for i in result.errors if i.path == "training.batch_size")
    assert issue.file == COMMAND_LINE == "<command line>"
    assert issue.key == "training.batch_size=-2"
    assert issue.line is None


def test_override_without_equals_is_an_error(base: Path) -> None:
    result = load_config(base, ["training.batch_size"])
    assert not result.valid
    issue = result.errors[0]
    assert issue.file == COMMAND_LINE
    assert issue.key == "training.batch_size"
    assert "=" in issue.message


def test_override_of_unknown_key_suggests_the_right_one(base: Path) -> None:
    result = load_config(base, ["training.batch_sise=4"])
    assert not result.valid
    issue = result.errors[0]
    assert issue.file == COMMAND_LINE
    assert "batch_size" in issue.message


# -- config groups on the command line ---------------------------------------------------------------------------
def test_group_selection_applies_the_builtin_preset(base: Path) -> None:
    cfg = ok(load_config(base, ["model=tiny"]))
    assert cfg.model.d_model == 256
    assert cfg.model.n_layers == 4
    assert cfg.training.learning_rate == pytest.approx(1e-4)  # the file is kept


def test_key_overrides_win_over_the_group(base: Path) -> None:
    cfg = ok(load_config(base, ["model=tiny", "model.n_layers=2"]))
    assert cfg.model.n_layers == 2
    assert cfg.model.d_model == 256


def test_key_overrides_win_over_the_group_given_after_them(base: Path) -> None:
    cfg = ok(load_config(base, ["model.n_layers=2", "model=tiny"]))
    assert cfg.model.n_layers == 2
    assert cfg.model.d_model == 256


def test_unknown_group_option_suggests_the_closest(base: Path) -> None:
    result = load_config(base, ["model=tinyy"])
    assert not result.valid
    issue = result.errors[0]
    assert issue.path == "model"
    assert issue.file == COMMAND_LINE
    assert issue.key == "model=tinyy"
    assert "did you mean `tiny`" in issue.message


def test_unknown_top_level_key_override_is_an_error(base: Path) -> None:
    result = load_config(base, ["foo=bar"])
    assert not result.valid
    issue = result.errors[0]
    assert issue.path == "foo"
    assert issue.file == COMMAND_LINE
    assert issue.key == "foo=bar"


def test_several_groups_compose(base: Path) -> None:
    cfg = ok(load_config(base, ["model=smollm2_135m", "training=stage2_pretrain", "distributed=fsdp_multi"]))
    assert (cfg.model.name, cfg.model.d_model, cfg.model.n_kv_heads) == ("smollm2_135m", 576, 3)
    assert cfg.training.optimizer == "muon"
    assert cfg.distributed.strategy == "fsdp"
    assert cfg.distributed.num_gpus == 8


# -- defaults: lists ----------------------------------------------------------------------------------------------
def test_defaults_list_file_wins_by_default(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        defaults:
          - model: tiny
        model:
          n_layers: 2
        """,
    )
    cfg = ok(load_config(path))
    assert cfg.model.n_layers == 2
    assert cfg.model.d_model == 256


def test_defaults_list_after_self_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        defaults:
          - _self_
          - model: tiny
        model:
          n_layers: 2
        """,
    )
    cfg = ok(load_config(path))
    assert cfg.model.n_layers == 4
    assert cfg.model.d_model == 256


def test_flow_style_defaults_list(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        defaults: [{model: tiny}]
        model: {n_layers: 2}
        """,
    )
    cfg = ok(load_config(path))
    assert (cfg.model.n_layers, cfg.model.d_model) == (2, 256)


def test_user_group_folder_next_to_the_config(tmp_path: Path) -> None:
    write(
        tmp_path / "model" / "mine.yaml",
        """
        hidden_size: 96
        n_layers: 3
        num_attention_heads: 4
        """,
    )
    path = write(
        tmp_path / "c.yaml",
        """
        defaults:
          - model: mine
        training:
          lr: 1e-4
        """,
    )
    cfg = ok(load_config(path))
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads) == (96, 3, 4)


def test_user_group_shadows_a_builtin(tmp_path: Path) -> None:
    write(tmp_path / "model" / "tiny.yaml", "d_model: 64\nn_heads: 4\n")
    path = write(tmp_path / "c.yaml", "training:\n  lr: 1e-4\n")
    cfg = ok(load_config(path, ["model=tiny"]))
    assert cfg.model.d_model == 64
    assert cfg.model.n_layers == 12  # nothing from the built-in tiny


def test_config_dirs_argument(tmp_path: Path, base: Path) -> None:
    extra = tmp_path / "elsewhere"
    write(extra / "model" / "extra.yaml", "d_model: 80\nn_heads: 4\n")
    assert not load_config(base, ["model=extra"]).valid
    cfg = ok(load_config(base, ["model=extra"], config_dirs=[extra]))
    assert cfg.model.d_model == 80


def test_config_dir_environment_variable(tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "from_env"
    write(extra / "model" / "envy.yaml", "d_model: 72\nn_heads: 4\n")
    monkeypatch.setenv("STACKWISE_CONFIG_DIR", str(extra))
    cfg = ok(load_config(base, ["model=envy"]))
    assert cfg.model.d_model == 72


def test_command_line_group_replaces_the_same_group_in_defaults(tmp_path: Path) -> None:
    write(tmp_path / "model" / "mine.yaml", "hidden_size: 96\nn_heads: 4\n")
    path = write(
        tmp_path / "c.yaml",
        """
        defaults:
          - model: tiny
        model:
          n_layers: 2
        """,
    )
    cfg = ok(load_config(path, ["model=mine"]))
    assert cfg.model.d_model == 96
    assert cfg.model.n_layers == 2  # the file still wins over the group
    assert cfg.model.d_ff is None  # nothing left over from tiny (d_ff 1024)


def test_unknown_group_in_defaults_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        defaults:
          - foo: bar
        training:
          lr: 1e-4
        """,
    )
    result = load_config(path)
    assert not result.valid
    issue = result.errors[0]
    assert issue.file == str(path)
    assert issue.line == 2


def test_missing_option_in_defaults_points_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        defaults:
          - _self_
          - model: tinyy
        """,
    )
    result = load_config(path)
    assert not result.valid
    issue = result.errors[0]
    assert "tiny" in issue.message
    assert issue.line == 3


# -- flat group files validated directly --------------------------------------------------------------------------
def test_flat_group_file_is_read_as_its_section(tmp_path: Path) -> None:
    path = write(tmp_path / "model" / "x.yaml", "d_model: 64\nn_heads: 4\n")
    cfg = ok(load_config(path))
    assert cfg.model.d_model == 64


def test_flat_group_file_with_only_d_model(tmp_path: Path) -> None:
    path = write(tmp_path / "model" / "x.yaml", "d_model: 64\n")
    result = load_config(path)
    # 64 is not divisible by the default 12 heads: the error must be a model error, i.e. read as `model`.
    assert all(i.path.startswith("model") for i in result.issues), result.issues
    assert not result.valid


# -- other guides' layouts ------------------------------------------------------------------------------------------
def test_003_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        train:
          total_steps: 1000
          micro_batch_size: 4
          grad_accum_steps: 8
          lr: 3e-4
        """,
    )
    t = ok(load_config(path)).training
    assert t.max_steps == 1000
    assert t.batch_size == 4
    assert t.gradient_accumulation_steps == 8
    assert t.learning_rate == pytest.approx(3e-4)


def test_001_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        model_config:
          hidden_size: 512
          num_attention_heads: 8
        train_config:
          per_device_train_batch_size: 16
        dataset_config:
          max_seq_length: 1024
        wandb_config:
          project: p
        """,
    )
    cfg = ok(load_config(path))
    assert cfg.model.d_model == 512
    assert cfg.training.batch_size == 16
    assert cfg.training.seq_len == 1024
    assert cfg.logging.wandb.enabled is True
    assert cfg.logging.wandb.project == "p"


def test_001_null_wandb_disables_it(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "wandb_config: null\n")
    assert ok(load_config(path)).logging.wandb.enabled is False


def test_002_flat_training_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "training" / "t.yaml",
        """
        grad_clip: 0.5
        num_epochs: 3
        use_amp: false
        data_file: data/train.txt
        """,
    )
    cfg = ok(load_config(path))
    assert cfg.training.max_grad_norm == pytest.approx(0.5)
    assert cfg.training.num_train_epochs == 3
    assert cfg.training.precision == "fp32"
    assert cfg.data.dataset_path == "data/train.txt"


def test_004_model_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "model" / "m.yaml",
        """
        hidden_size: 512
        num_hidden_layers: 8
        num_attention_heads: 8
        num_kv_heads: 2
        rms_norm_eps: 1.0e-6
        tie_word_embeddings: false
        hidden_act: relu2
        quantization:
          weight_bits: 1.58
          activation_bits: 8
        subln:
          enabled: true
        teacher:
          pretrained: some/teacher
        """,
    )
    cfg = ok(load_config(path))
    m = cfg.model
    assert (m.d_model, m.n_layers, m.n_heads, m.n_kv_heads) == (512, 8, 8, 2)
    assert m.norm_eps == pytest.approx(1e-6)
    assert m.tie_embeddings is False
    assert m.ffn_activation == "relu2"
    assert m.quantization is not None and m.quantization.activation_bits == 8
    assert m.subln.enabled is True
    assert cfg.distillation.teacher.pretrained == "some/teacher"


def test_004_model_file_through_defaults(tmp_path: Path) -> None:
    write(tmp_path / "model" / "m.yaml", "hidden_size: 512\nnum_attention_heads: 8\nnum_kv_heads: 2\n")
    path = write(tmp_path / "c.yaml", "defaults:\n  - model: m\ntraining:\n  lr: 1e-4\n")
    cfg = ok(load_config(path))
    assert (cfg.model.d_model, cfg.model.n_kv_heads) == (512, 2)


# -- error locations --------------------------------------------------------------------------------------------------
def test_alias_error_points_at_the_key_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        model:
          d_model: 512
          n_heads: 8
        train:
          lr: -1
        """,
    )
    result = load_config(path)
    assert not result.valid
    issue = next(i for i in result.errors if i.path == "training.learning_rate")
    assert issue.key == "train.lr"
    assert issue.line == 5
    assert issue.column == 3
    assert issue.file == str(path)
    assert len(result.errors) == 1


def test_001_alias_error_points_at_the_key_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        model_config:
          hidden_size: 512
          num_attention_heads: 8
        train_config:
          per_device_train_batch_size: 0
        """,
    )
    result = load_config(path)
    (issue,) = result.errors
    assert issue.path == "training.batch_size"
    assert issue.key == "train_config.per_device_train_batch_size"
    assert (issue.line, issue.column) == (5, 3)


def test_alias_override_error_keeps_the_argument_as_key(base: Path) -> None:
    result = load_config(base, ["train.lr=-1"])
    (issue,) = result.errors
    assert issue.path == "training.learning_rate"
    assert issue.file == COMMAND_LINE
    assert issue.key == "train.lr=-1"


def test_bad_list_item_is_reported_once_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        training:
          betas:
            - 0.9
            - abc
        """,
    )
    result = load_config(path)
    assert [(i.path, i.line, i.column) for i in result.errors] == [("training.betas[1]", 4, 7)]


def test_group_file_error_points_into_the_group_file(tmp_path: Path) -> None:
    group = write(tmp_path / "model" / "mine.yaml", "hidden_size: 96\nn_heads: 4\ndropout: 2\n")
    path = write(tmp_path / "c.yaml", "defaults:\n  - model: mine\n")
    result = load_config(path)
    issue = next(i for i in result.errors if i.path == "model.dropout")
    assert Path(issue.file or "").resolve() == group.resolve()
    assert issue.line == 3


def test_conflicting_alias_and_canonical_name(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """
        training:
          lr: 1e-4
          learning_rate: 2e-4
        """,
    )
    result = load_config(path)
    assert not result.valid
    assert any(i.path == "training.learning_rate" for i in result.errors)


# -- the StackwiseConfig API -------------------------------------------------------------------------------------------
def test_from_yaml_returns_a_config(base: Path) -> None:
    cfg = StackwiseConfig.from_yaml(base, overrides=["model=tiny"])
    assert isinstance(cfg, StackwiseConfig)
    assert cfg.model.d_model == 256
    assert cfg.training.learning_rate == pytest.approx(1e-4)


def test_from_yaml_raises_config_error_with_issues(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "training:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as info:
        StackwiseConfig.from_yaml(path)
    assert any(i.path == "training.batch_size" and i.line == 2 for i in info.value.issues)


@pytest.mark.parametrize("overrides", [[], ["model=tiny"], ["model=smollm2_135m", "training=stage2_pretrain"]])
def test_to_yaml_round_trip(base: Path, tmp_path: Path, overrides: list[str]) -> None:
    cfg = StackwiseConfig.from_yaml(base, overrides=overrides)
    text = cfg.to_yaml()
    out = tmp_path / "round.yaml"
    out.write_text(text, encoding="utf-8")
    again = ok(load_config(out))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    written = tmp_path / "written.yaml"
    assert cfg.to_yaml(written) == written.read_text(encoding="utf-8")


def test_to_dict_has_every_section(base: Path) -> None:
    data = StackwiseConfig.from_yaml(base).to_dict()
    assert set(SECTIONS) <= set(data)
    assert set(data) == set(SECTIONS)
    assert data["training"]["learning_rate"] == pytest.approx(1e-4)
    assert isinstance(data["training"]["betas"], list)


def test_importing_stackwise_does_not_import_torch() -> None:
    code = (
        "import sys, stackwise, stackwise.config\n"
        "from stackwise import StackwiseConfig\n"
        "StackwiseConfig()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
