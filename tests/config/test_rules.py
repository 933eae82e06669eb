"""Validation rules of the config system: each test writes a YAML file that breaks one rule, loads it with
`load_config`, and checks the issue's dotted path, its 1-based line, its severity and its message.

Line numbers are those of the offending key in the YAML written by the test (after `write` strips the
leading newline and common indentation, the first line of the YAML text is line 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from stackwise.config import ConfigError, Issue, LoadResult, StackwiseConfig, load_config
from tests.helpers import write

# -- helpers ---------------------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> LoadResult:
    return load_config(write(tmp_path, text))


def _dump(result: LoadResult) -> str:
    return "\n".join(f"  {i.severity} {i.path} line={i.line}: {i.message}" for i in result.issues) or "  (no issues)"


def issue_at(result: LoadResult, path: str, severity: str = "error") -> Issue:
    """The one issue with this path and severity (fails listing every issue when there is none)."""
    found = [i for i in result.issues if i.path == path and i.severity == severity]
    assert found, f"no {severity} at `{path}`; issues were:\n{_dump(result)}"
    return found[0]


def expect(result: LoadResult, path: str, line: int, severity: str, fragment: str) -> Issue:
    issue = issue_at(result, path, severity)
    assert issue.line == line, f"{path}: expected line {line}, got {issue.line}; issues were:\n{_dump(result)}"
    assert fragment in issue.message, f"{path}: {fragment!r} not in {issue.message!r}"
    if severity == "error":
        assert not result.valid and result.config is None
    return issue


# -- model: attention geometry -------------------------------------------------------------------------------


def test_d_model_divisible_by_n_heads(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          d_model: 100
          n_heads: 3
        """,
    )
    issue = expect(r, "model.n_heads", 3, "error", "d_model (100) must be divisible by n_heads (3)")
    assert "nearby head counts" in issue.message


def test_n_heads_divisible_by_n_kv_heads(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_heads: 12
          n_kv_heads: 5
        """,
    )
    expect(r, "model.n_kv_heads", 3, "error", "n_heads (12) must be divisible by n_kv_heads (5)")


def test_rope_needs_even_head_dim(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          d_model: 96
          n_heads: 32
          use_rope: true
        """,
    )
    expect(r, "model.use_rope", 4, "error", "RoPE needs an even head dimension")


def test_mla_qk_rope_head_dim_must_be_even(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          attention_type: mla
          mla:
            qk_rope_head_dim: 63
        """,
    )
    expect(r, "model.mla.qk_rope_head_dim", 4, "error", "qk_rope_head_dim (63) must be even")


def test_mla_dims_must_be_positive(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          attention_type: mla
          mla:
            kv_lora_rank: 0
        """,
    )
    expect(r, "model.mla.kv_lora_rank", 4, "error", "greater than or equal to 1")


# -- model: PEER --------------------------------------------------------------------------------------------------


def test_peer_num_experts_is_product_of_sub_keys(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          use_peer: true
          peer:
            num_experts: 1000
            product_key_dim: [32, 32]
        """,
    )
    expect(r, "model.peer.num_experts", 4, "error", "must equal the product of product_key_dim [32, 32] = 1024")


def test_peer_query_dim_divisible_by_sub_keys(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          use_peer: true
          peer:
            num_experts: 512
            product_key_dim: [8, 8, 8]
            num_experts_per_tok: 4
            query_dim: 256
        """,
    )
    expect(r, "model.peer.query_dim", 7, "error", "query_dim (256) must be divisible by the number of sub-keys (3)")
    assert [i.path for i in r.errors] == ["model.peer.query_dim"], _dump(r)


def test_peer_top_k_not_above_sub_key_count(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          use_peer: true
          peer:
            num_experts: 64
            product_key_dim: [8, 8]
            num_experts_per_tok: 16
        """,
    )
    expect(r, "model.peer.num_experts_per_tok", 6, "error", "larger than the smallest sub-key count (8)")


def test_peer_start_layer_below_n_layers(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 12
          use_peer: true
          peer_start_layer: 12
        """,
    )
    expect(r, "model.peer_start_layer", 4, "error", "peer_start_layer (12) must be below n_layers (12)")


# -- training: blocks and modes ----------------------------------------------------------------------------------


def test_total_blocks_times_block_size_is_n_layers(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 12
        training:
          mode: blockwise
          total_blocks: 5
          block_size: 2
        """,
    )
    expect(r, "training.total_blocks", 5, "error", "total_blocks x block_size = 5 x 2 = 10, but n_layers is 12")


def test_layerwise_means_block_size_one(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 12
        training:
          mode: layerwise
          block_size: 2
        """,
    )
    expect(r, "training.block_size", 5, "error", "mode layerwise means block_size: 1")


def test_fusion_mode_outside_fused_is_a_warning(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          mode: blockwise
          fusion_mode: trainable
        """,
    )
    expect(r, "training.fusion_mode", 3, "warning", "fusion_mode only applies to mode fused")
    assert r.valid and r.config is not None


# -- training: time-step masking ----------------------------------------------------------------------------------


def test_one_mask_fraction_per_time_step(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          time_step_masking: true
          num_time_steps: 4
          time_step_mask_fractions: [0.25, 0.5, 0.75]
        """,
    )
    expect(r, "training.time_step_mask_fractions", 4, "error", "3 mask fractions given for num_time_steps 4")


def test_mask_fractions_strictly_increasing(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          time_step_masking: true
          time_step_mask_fractions: [0.25, 0.5, 0.5, 1.0]
        """,
    )
    expect(r, "training.time_step_mask_fractions", 3, "error", "strictly increasing")


@pytest.mark.parametrize("fractions, bad", [("[0.0, 0.5, 1.0]", "[0.0]"), ("[0.5, 1.5]", "[1.5]")])
def test_mask_fractions_in_zero_one(tmp_path, fractions, bad):
    r = load(
        tmp_path,
        f"""
        training:
          time_step_masking: true
          time_step_mask_fractions: {fractions}
        """,
    )
    expect(r, "training.time_step_mask_fractions", 3, "error", f"mask fractions must be in (0, 1]; got {bad}")


def test_min_mask_fraction_below_max(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          time_step_masking: true
          min_mask_fraction: 0.8
          max_mask_fraction: 0.5
        """,
    )
    expect(r, "training.min_mask_fraction", 3, "error", "min_mask_fraction (0.8) must be below max_mask_fraction (0.5)")


def test_mask_schedule_type_lists_allowed_values(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          time_step_masking: true
          mask_schedule_type: quadratic
        """,
    )
    issue = expect(r, "training.mask_schedule_type", 3, "error", "'quadratic' is not allowed")
    assert "linear, exponential, cosine" in issue.message


# -- training: progressive QLoRA ----------------------------------------------------------------------------------


def test_variable_strategy_needs_qlora_configs(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 12
        training:
          progressive:
            enabled: true
            qlora_enabled: true
            qlora_strategy: variable
        """,
    )
    expect(r, "training.progressive.qlora_strategy", 7, "error", "qlora_strategy variable needs qlora_configs")


def test_qlora_configs_keys_within_total_blocks(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 12
        training:
          total_blocks: 4
          progressive:
            enabled: true
            qlora_enabled: true
            qlora_strategy: variable
            qlora_configs:
              0: {rank: 8, alpha: 16}
              4: {rank: 8, alpha: 16}
        """,
    )
    expect(
        r,
        "training.progressive.qlora_configs[4]",
        11,
        "error",
        "stack index 4 does not exist: this config has 4 stacks",
    )
    assert [i.path for i in r.errors] == ["training.progressive.qlora_configs[4]"], _dump(r)


def test_qlora_configs_keys_within_n_layers_over_block_size(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 12
        training:
          block_size: 3
          progressive:
            enabled: true
            qlora_strategy: variable
            qlora_configs:
              3: {rank: 8, alpha: 16}
              4: {rank: 8, alpha: 16}
        """,
    )
    expect(r, "training.progressive.qlora_configs[4]", 10, "error", "this config has 4 stacks (0..3)")
    assert [i.path for i in r.errors] == ["training.progressive.qlora_configs[4]"], _dump(r)


def test_qlora_configs_keys_default_to_one_layer_blocks(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 6
        training:
          progressive:
            enabled: true
            qlora_strategy: variable
            qlora_configs:
              5: {rank: 8, alpha: 16}
              6: {rank: 8, alpha: 16}
        """,
    )
    expect(r, "training.progressive.qlora_configs[6]", 9, "error", "this config has 6 stacks (0..5)")
    assert [i.path for i in r.errors] == ["training.progressive.qlora_configs[6]"], _dump(r)


def test_qlora_configs_negative_key_points_at_its_line(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 6
        training:
          progressive:
            enabled: true
            qlora_strategy: variable
            qlora_configs:
              0: {rank: 8, alpha: 16}
              -1: {rank: 8, alpha: 16}
        """,
    )
    expect(r, "training.progressive.qlora_configs[-1]", 9, "error", "stack index -1 does not exist")


def test_rank_pattern_below_one_names_the_stack(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 8
        training:
          progressive:
            enabled: true
            qlora_strategy: progressive
            qlora_enabled: true
            qlora_rank: 4
            qlora_rank_pattern: decreasing
        """,
    )
    issue = expect(r, "training.progressive.qlora_rank_pattern", 9, "error", "drives stack 3's rank below 1")
    assert "4 -> 0.5" in issue.message


def test_qlora_trunk_needs_an_adapter(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          progressive:
            enabled: true
            trunk_strategy: qlora
            progressive_qlora: false
            qlora_enabled: false
        """,
    )
    expect(r, "training.progressive.trunk_strategy", 4, "error", "no adapter could train it")


# -- optimisation, duration, data ------------------------------------------------------------------------------


def test_fp16_and_bf16_both_set_in_001_layout(tmp_path):
    r = load(
        tmp_path,
        """
        model_config:
          hidden_size: 768
        train_config:
          fp16: true
          bf16: true
        """,
    )
    issue = expect(r, "training.precision", 5, "error", "both set `training.precision`")
    assert "train_config.fp16" in issue.message and "train_config.bf16" in issue.message


def test_max_steps_with_num_train_epochs(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          max_steps: 1000
          num_train_epochs: 3
        """,
    )
    expect(r, "training.num_train_epochs", 3, "error", "give max_steps (1000) or num_train_epochs (3), not both")


def test_epochs_over_streaming_dataset_need_steps_per_epoch(tmp_path):
    r = load(
        tmp_path,
        """
        data:
          dataset_path: allenai/c4
          streaming: true
        training:
          num_train_epochs: 3
        """,
    )
    expect(r, "training.num_train_epochs", 5, "error", "a streaming dataset has no length")
    ok = load(
        tmp_path,
        """
        data:
          dataset_path: allenai/c4
          streaming: true
        training:
          num_train_epochs: 3
          steps_per_epoch: 100
        """,
    )
    assert ok.valid, _dump(ok)


def test_epochs_over_streaming_datasets_entry(tmp_path):
    r = load(
        tmp_path,
        """
        data:
          datasets:
            - path: allenai/c4
              streaming: true
        training:
          num_train_epochs: 3
        """,
    )
    expect(r, "training.num_train_epochs", 6, "error", "steps_per_epoch with num_train_epochs")


def test_text_field_with_text_template(tmp_path):
    r = load(
        tmp_path,
        """
        data:
          text_field: content
          text_template: "{instruction} {output}"
        """,
    )
    expect(r, "data.text_template", 3, "error", "give text_field or text_template, not both")


def test_text_field_with_text_template_in_datasets_entry(tmp_path):
    r = load(
        tmp_path,
        """
        data:
          datasets:
            - path: a.jsonl
            - path: b.jsonl
              text_field: content
              text_template: "{instruction} {output}"
        """,
    )
    expect(r, "data.datasets[1].text_template", 6, "error", "give text_field or text_template, not both")


def test_warmup_steps_with_warmup_ratio(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          warmup_steps: 100
          warmup_ratio: 0.1
        """,
    )
    expect(r, "training.warmup_ratio", 3, "error", "give warmup_steps (100) or warmup_ratio (0.1), not both")


def test_min_lr_above_learning_rate(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          learning_rate: 1.0e-4
          min_lr: 1.0e-3
        """,
    )
    expect(r, "training.min_lr", 3, "error", "min_lr (0.001) is above learning_rate (0.0001)")


def test_max_grad_norm_zero_says_how_to_disable_clipping(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          seed: 1
          max_grad_norm: 0
        """,
    )
    expect(r, "training.max_grad_norm", 3, "error", "max_grad_norm: null")


def test_bidirectional_attention_with_causal_objective(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          attention_mode: bidirectional
        training:
          objective: causal
        """,
    )
    expect(r, "training.objective", 4, "error", "causal) objective with bidirectional attention")


def test_seq_len_above_max_seq_len(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          max_seq_len: 1024
        training:
          seq_len: 2048
        """,
    )
    expect(r, "training.seq_len", 4, "error", "seq_len (2048) is above model.max_seq_len (1024)")


def test_vocab_size_below_named_tokenizer(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          vocab_size: 32000
        data:
          tokenizer_path: gpt2
        """,
    )
    expect(
        r,
        "model.vocab_size",
        2,
        "error",
        "vocab_size (32000) is smaller than the vocabulary of tokenizer `gpt2` (50257)",
    )


def test_vocab_size_below_local_tokenizer(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    vocab = {f"tok{i}": i for i in range(300)}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab}, "added_tokens": []}))
    r = load(
        tmp_path,
        f"""
        model:
          vocab_size: 256
        data:
          tokenizer_path: {folder}
        """,
    )
    expect(r, "model.vocab_size", 2, "error", "is smaller than the vocabulary of tokenizer")
    assert "(300)" in issue_at(r, "model.vocab_size").message


# -- typical ranges vs impossible values ---------------------------------------------------------------------------


def test_outside_typical_range_is_a_warning(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          n_layers: 40
        """,
    )
    expect(r, "model.n_layers", 2, "warning", "typical")
    assert r.valid and r.config is not None and r.config.model.n_layers == 40


@pytest.mark.parametrize(
    "section, key, value, fragment",
    [
        ("model", "d_model", "-768", "greater than or equal to 1"),
        ("model", "dropout", "1.0", "less than 1"),
        ("training", "min_mask_fraction", "1.5", "less than or equal to 1"),
    ],
)
def test_impossible_values_are_errors(tmp_path, section, key, value, fragment):
    r = load(
        tmp_path,
        f"""
        {section}:
          {key}: {value}
        """,
    )
    expect(r, f"{section}.{key}", 2, "error", fragment)


def test_rule_runs_despite_unrelated_field_error(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          d_model: 100
          n_heads: 3
        training:
          batch_size: -1
        """,
    )
    expect(r, "training.batch_size", 5, "error", "greater than or equal to 1")
    expect(r, "model.n_heads", 3, "error", "must be divisible by n_heads (3)")


@pytest.mark.parametrize(
    "text, path, line, fragment",
    [
        pytest.param(
            """
            data:
              num_workers: -1
              text_field: content
              text_template: "{a}"
            """,
            "data.text_template",
            4,
            "not both",
            id="data",
        ),
        pytest.param(
            """
            model:
              use_peer: true
              peer:
                log_freq: 0
                num_experts: 1000
                product_key_dim: [32, 32]
            """,
            "model.peer.num_experts",
            5,
            "product of product_key_dim",
            id="peer",
        ),
        pytest.param(
            """
            model:
              n_layers: 8
            training:
              progressive:
                enabled: true
                qlora_alpha: -1
                qlora_strategy: progressive
                qlora_enabled: true
                qlora_rank: 4
                qlora_rank_pattern: decreasing
            """,
            "training.progressive.qlora_rank_pattern",
            10,
            "below 1",
            id="progressive",
        ),
        pytest.param(
            """
            model:
              attention_type: mla
              mla:
                kv_lora_rank: 0
                qk_rope_head_dim: 63
            """,
            "model.mla.qk_rope_head_dim",
            5,
            "must be even",
            id="mla",
        ),
    ],
)
def test_rule_runs_despite_error_in_unrelated_field_of_same_section(tmp_path, text, path, line, fragment):
    """A rule reading a section must not be silenced by an error in a field of that section it does not use."""
    r = load(tmp_path, text)
    assert len(r.errors) == 2, _dump(r)
    expect(r, path, line, "error", fragment)


# -- aliases and unknown keys -----------------------------------------------------------------------------------


def test_alias_lr_gives_float_learning_rate(tmp_path):
    r = load(
        tmp_path,
        """
        train:
          lr: 1e-4
        """,
    )
    assert r.valid, _dump(r)
    lr = r.config.training.learning_rate
    assert isinstance(lr, float) and lr == 0.0001


def test_alias_and_canonical_name_both_given(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          lr: 1e-4
          learning_rate: 2e-4
        """,
    )
    issue = expect(r, "training.learning_rate", 3, "error", "give it once")
    assert "`training.lr` (line 2)" in issue.message and "`training.learning_rate`" in issue.message


def test_unknown_key_suggests_close_name(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          learning_rat: 1e-4
        """,
    )
    expect(r, "training.learning_rat", 2, "error", "did you mean `learning_rate`?")


def test_key_in_wrong_section_names_its_section(tmp_path):
    r = load(
        tmp_path,
        """
        training:
          batch_size: 8
          d_model: 512
        """,
    )
    expect(r, "training.d_model", 3, "error", "belongs under `model.`")


def test_nested_unknown_key_suggests_close_name(tmp_path):
    r = load(
        tmp_path,
        """
        model:
          use_peer: true
          peer:
            num_expert: 1024
        """,
    )
    expect(r, "model.peer.num_expert", 4, "error", "did you mean `num_experts`?")


# -- building configs in Python -----------------------------------------------------------------------------------


def test_constructor_runs_rules():
    with pytest.raises(ValidationError, match="n_heads"):
        StackwiseConfig(model={"d_model": 100, "n_heads": 3})


def test_from_dict_raises_config_error():
    with pytest.raises(ConfigError) as info:
        StackwiseConfig.from_dict({"training": {"batch_size": -1}})
    assert [i.path for i in info.value.issues if i.severity == "error"] == ["training.batch_size"]
    with pytest.raises(ConfigError, match="must be divisible by n_heads"):
        StackwiseConfig.from_dict({"model": {"d_model": 100, "n_heads": 3}})


def test_updated_returns_new_validated_config():
    cfg = StackwiseConfig()
    new = cfg.updated({"training.lr": 1e-3})
    assert new is not cfg
    assert isinstance(new.training.learning_rate, float) and new.training.learning_rate == 1e-3
    assert cfg.training.learning_rate == 3e-4
    with pytest.raises(ConfigError, match="n_heads"):
        cfg.updated({"model.d_model": 100, "model.n_heads": 3})


def test_config_is_frozen():
    cfg = StackwiseConfig()
    with pytest.raises(ValidationError):
        cfg.training = None  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.training.learning_rate = 1.0  # type: ignore[misc]
    assert cfg.training.learning_rate == 3e-4
