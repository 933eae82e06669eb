"""The stage schedule worked out from a config: budgets, trainable sets, adapters and their ranks, masks."""

from __future__ import annotations

from typing import Any

import pytest

from stackwise import StackwiseConfig
from stackwise.config import derived
from stackwise.train import stages
from stackwise.train.stages import Adapter


def cfg(n_layers: int = 4, **training: Any) -> StackwiseConfig:
    model = {"d_model": 32, "n_layers": n_layers, "n_heads": 2, "vocab_size": 258, "attention_mode": "bidirectional"}
    return StackwiseConfig.from_dict({"model": model, "training": {"max_steps": 12, **training}})


def progressive(**p: Any) -> StackwiseConfig:
    return cfg(total_blocks=4, progressive={"enabled": True, "trunk_strategy": "qlora", "qlora_enabled": True, **p})


# -- rank and alpha patterns: the guide's table, stack by stack ------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "ranks"),
    [
        ("constant", [16, 16, 16, 16]),
        ("increasing", [16, 32, 64, 128]),  # r * 2^k
        ("decreasing", [16, 8, 4, 2]),  # r / 2^k
        ("linear", [16, 32, 48, 64]),  # r * (k + 1)
    ],
)
def test_rank_patterns_give_the_guides_ranks_per_stack(pattern: str, ranks: list[int]) -> None:
    c = progressive(qlora_strategy="progressive", qlora_rank=16, qlora_alpha=32, qlora_rank_pattern=pattern)
    assert [derived.stack_lora(c, k)[0] for k in range(4)] == ranks
    # The last stage carries stacks 0-2 as trunk, each with its own stack LoRA.
    last = stages.plan(c)[-1]
    trunk = {s.index: s.adapters for s in last.stacks if s.role == "trunk"}
    assert {k: a[0].rank for k, a in trunk.items()} == dict(enumerate(ranks[:3]))


@pytest.mark.parametrize(
    ("pattern", "alphas"),
    [("constant", [32, 32, 32, 32]), ("increasing", [32, 64, 128, 256]), ("decreasing", [32, 16, 8, 4])],
)
def test_alpha_patterns_follow_the_same_rule(pattern: str, alphas: list[float]) -> None:
    c = progressive(qlora_strategy="progressive", qlora_rank=16, qlora_alpha=32, qlora_alpha_pattern=pattern)
    assert [derived.stack_lora(c, k)[1] for k in range(4)] == alphas


def test_variable_and_simplified_strategies() -> None:
    configs = {k: {"rank": 8 * 2**k, "alpha": 16 * 2**k} for k in range(4)}
    c = progressive(qlora_strategy="variable", qlora_configs=configs)
    assert [derived.stack_lora(c, k) for k in range(4)] == [(8, 16), (16, 32), (32, 64), (64, 128)]
    c = progressive(qlora_strategy="simplified", qlora_rank=4, qlora_alpha=8, qlora_rank_pattern="increasing")
    assert [derived.stack_lora(c, k) for k in range(4)] == [(4, 8)] * 4  # patterns only apply to `progressive`


# -- budgets ------------------------------------------------------------------------------------------------
def test_max_steps_is_split_evenly_with_the_remainder_last() -> None:
    plan = stages.plan(cfg(mode="layerwise", max_steps=10))
    assert [s.steps for s in plan] == [2, 2, 3, 3]
    assert [s.start for s in plan] == [0, 2, 4, 7] and plan[-1].end == 10


def test_epochs_per_layer_sets_each_stage_and_max_steps_caps_it() -> None:
    assert [s.steps for s in stages.plan(cfg(mode="layerwise", max_steps=None, epochs_per_layer=2), 5)] == [10] * 4
    assert [s.steps for s in stages.plan(cfg(mode="layerwise", max_steps=12, epochs_per_layer=1), 2)] == [2] * 4
    assert [s.steps for s in stages.plan(cfg(mode="layerwise", max_steps=None, num_train_epochs=2), 6)] == [3] * 4


def test_end_to_end_is_one_stage_that_trains_everything() -> None:
    (only,) = stages.plan(cfg())
    assert only.steps == 12 and only.embeddings and only.head and not only.greedy
    assert [(s.layers, s.train) for s in only.stacks] == [((0, 1, 2, 3), "full")]


# -- what trains in each mode -------------------------------------------------------------------------------
def summary(plan: list[stages.Stage]) -> list[tuple]:
    return [(s.layers, tuple((st.index, st.train, st.base) for st in s.stacks), s.embeddings) for s in plan]


def test_layerwise_trains_one_layer_at_a_time_on_a_frozen_trunk() -> None:
    plan = stages.plan(cfg(mode="layerwise"))
    assert [s.layers for s in plan] == [(0,), (0, 1), (0, 1, 2), (0, 1, 2, 3)]
    assert all(s.greedy for s in plan)
    assert [s.embeddings for s in plan] == [True, False, False, False]  # embeddings train with the first layer
    for s in plan:
        assert [st.train for st in s.stacks] == ["frozen"] * s.index + ["full"]


def test_blockwise_and_fused_frozen_differ_in_the_embeddings_only() -> None:
    block = stages.plan(cfg(mode="blockwise", block_size=2))
    fused = stages.plan(cfg(mode="fused", block_size=2))
    assert [s.layers for s in block] == [s.layers for s in fused] == [(0, 1), (0, 1, 2, 3)]
    assert [s.embeddings for s in block] == [True, False] and [s.embeddings for s in fused] == [True, True]
    assert [s.greedy for s in block] == [True, True] and [s.greedy for s in fused] == [False, False]


def test_fused_trainable_puts_adapters_on_a_quantized_trunk_with_their_own_lr() -> None:
    c = cfg(
        mode="fused",
        fusion_mode="trainable",
        total_blocks=2,
        qlora_enabled=True,
        quantization_enabled=True,
        quantization_type="nf4",
        qlora_lr=1e-5,
        current_block_lr=5e-4,
        learning_rate=1e-3,
        progressive={"qlora_rank": 4, "qlora_alpha": 8},
    )
    first, second = stages.plan(c)
    trunk, new = second.stacks
    assert (trunk.train, trunk.base, trunk.adapters, trunk.lr) == ("adapters", "nf4", (Adapter("stack", 4, 8),), 1e-5)
    assert (new.train, new.base, new.lr, second.lr) == ("full", "fp32", 5e-4, 1e-3)
    no_adapters = stages.plan(cfg(mode="fused", fusion_mode="trainable", total_blocks=2))[1]
    assert [(s.train, s.adapters) for s in no_adapters.stacks] == [("full", ()), ("full", ())]


def test_progressive_prepend_puts_the_new_stack_first_and_merges_last_stages_trunk_adapters() -> None:
    c = progressive(building_mode="prepend", progressive_qlora=True, new_stack_precision="bfloat16")
    plan = stages.plan(c)
    assert [s.layers for s in plan] == [(0,), (1, 0), (2, 1, 0), (3, 2, 1, 0)]
    assert [s.merge for s in plan] == [(), (), ((0, "progressive"),), ((0, "progressive"), (1, "progressive"))]
    last = plan[-1]
    assert last.new.compute == "bf16" and last.new.train == "full"
    assert all(s.base == "nf4" and [a.name for a in s.adapters] == ["stack", "progressive"] for s in last.stacks[1:])


def test_progressive_with_a_frozen_trunk_has_no_adapters() -> None:
    c = cfg(total_blocks=2, progressive={"enabled": True})
    assert summary(stages.plan(c)) == [
        ((0, 1), ((0, "full", "fp32"),), True),
        ((0, 1, 2, 3), ((0, "frozen", "fp32"), (1, "full", "fp32")), True),
    ]


# -- mask fractions -----------------------------------------------------------------------------------------
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)


def test_time_steps_are_spread_over_the_blocks() -> None:
    c = cfg(12, mode="fused", total_blocks=3, time_step_masking=True, time_step_mask_fractions=FRACTIONS)
    assert [s.mask for s in stages.plan(c)] == [FRACTIONS[0:4], FRACTIONS[4:8], FRACTIONS[8:12]]
    c = cfg(12, mode="layerwise", time_step_masking=True, num_time_steps=12, time_step_mask_fractions=FRACTIONS)
    assert [s.mask for s in stages.plan(c)] == [(f,) for f in FRACTIONS]


def test_end_to_end_draws_among_all_time_steps() -> None:
    c = cfg(time_step_masking=True, time_step_mask_fractions=(0.2, 0.5, 0.8))
    assert stages.plan(c)[0].mask == (0.2, 0.5, 0.8)
    assert stages.plan(cfg())[0].mask is None  # U(min_mask_fraction, max_mask_fraction)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("linear", [0.1, 0.4, 0.7, 1.0]),
        ("exponential", [0.1, 0.1 * 10 ** (1 / 3), 0.1 * 10 ** (2 / 3), 1.0]),
        ("cosine", [0.1, 0.325, 0.775, 1.0]),
    ],
)
def test_without_time_steps_block_k_trains_at_the_depth_schedule(schedule: str, expected: list[float]) -> None:
    c = cfg(mode="layerwise", min_mask_fraction=0.1, max_mask_fraction=1.0, mask_schedule_type=schedule)
    assert [s.mask[0] for s in stages.plan(c)] == pytest.approx(expected)


def test_a_causal_schedule_has_no_masks() -> None:
    c = StackwiseConfig.from_dict({"model": {"n_layers": 2}, "training": {"mode": "layerwise", "max_steps": 4}})
    assert [s.mask for s in stages.plan(c)] == [None, None]


# -- rules that keep a schedule possible ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("training", "path", "words"),
    [
        ({"mode": "layerwise", "max_steps": 3}, "training.max_steps", "give at least 4"),
        ({"mode": "layerwise", "progressive": {"enabled": True}}, "training.mode", "two different stage schedules"),
        ({"mode": "fused", "cache_activations": True}, "training.cache_activations", "greedy modes"),
        ({"mode": "layerwise", "cache_activations": True}, "training.cache_activations", "masked afresh"),
        (
            {"mode": "fused", "fusion_mode": "trainable", "quantization_enabled": True},
            "training.quantization_enabled",
            "only train through adapters",
        ),
        (
            {
                "mode": "fused",
                "total_blocks": 4,
                "time_step_masking": True,
                "time_step_mask_fractions": [0.2, 0.5, 0.9],
            },
            "training.time_step_mask_fractions",
            "cannot be spread over 4 blocks",
        ),
    ],
)
def test_impossible_schedules_are_validation_errors(training: dict, path: str, words: str) -> None:
    from stackwise.config.loader import load_mapping

    model = {"d_model": 32, "n_layers": 4, "n_heads": 2, "vocab_size": 258, "attention_mode": "bidirectional"}
    result = load_mapping({"model": model, "training": {"max_steps": 12, **training}})
    assert any(i.path == path and words in i.message for i in result.errors), result.issues


def test_nvfp4_is_refused_by_name() -> None:
    from stackwise.config.support import unsupported_settings

    c = cfg(total_blocks=2, progressive={"enabled": True, "new_stack_precision": "nvfp4"})
    (issue,) = unsupported_settings(c)
    assert issue.path == "training.progressive.new_stack_precision" and "Blackwell" in issue.message
