"""Every schema field is consumed by a named part of stackwise, or listed in one place as not supported yet."""

from __future__ import annotations

import pytest

from stackwise.config import StackwiseConfig
from stackwise.config.support import CONSUMED, NOT_YET, consumer_of, field_paths, unsupported_settings


def test_every_field_has_a_consumer() -> None:
    paths = field_paths()
    assert len(paths) > 150  # the whole schema, sub-sections expanded
    rows = []
    for path in paths:
        component, now = consumer_of(path)  # raises KeyError for a field nobody owns
        rows.append(f"{path:55} {'reads now' if now else 'not yet  '} {component}")
    print("\n".join(rows))  # the field -> consumer listing; shown with `pytest -s`


def test_a_new_field_must_be_placed() -> None:
    assert not [key for key in NOT_YET if "." not in key]  # no whole-section entries that would swallow new fields
    with pytest.raises(KeyError):
        consumer_of("training.some_new_option")


def test_registry_names_only_real_fields() -> None:
    paths = set(field_paths())
    for key in [*CONSUMED, *NOT_YET]:
        assert key in paths or any(p.startswith(key + ".") for p in paths), key
    assert not set(CONSUMED) & set(NOT_YET)


def test_defaults_set_nothing_unsupported() -> None:
    assert unsupported_settings(StackwiseConfig()) == []


def test_set_fields_not_consumed_are_refused() -> None:
    cfg = StackwiseConfig.from_dict(
        {
            "model": {
                "name": "x",
                "d_model": 64,
                "n_heads": 4,
                "use_peer": True,
                "peer_start_layer": 1,
                "peer": {"num_experts": 16, "product_key_dim": [4, 4], "num_experts_per_tok": 2, "query_dim": 8},
                "attention_kernel": "triton",
            },
            "training": {"lr": 1e-3},
            "distributed": {"strategy": "ddp"},
        }
    )
    issues = {i.path: i.message for i in unsupported_settings(cfg)}
    assert "model.name" not in issues and "model.d_model" not in issues  # read by the config layer / the builder
    assert "model.use_peer" not in issues  # the builder reads PEER settings now
    assert "training.learning_rate" not in issues  # the trainer reads it
    assert "model.attention_kernel" not in issues  # the kernel dispatch reads it
    assert "DDP" in issues["distributed.strategy"]
    assert issues["distributed.strategy"].startswith("`distributed.strategy` is not supported yet")


def test_a_planned_setting_written_at_its_default_is_not_refused() -> None:
    # `strategy: single` asks for what the engine does; `ddp` asks for what it does not do yet.
    same = StackwiseConfig.from_dict({"distributed": {"strategy": "single", "num_gpus": 1}})
    assert unsupported_settings(same) == []
    other = StackwiseConfig.from_dict({"distributed": {"strategy": "ddp", "num_gpus": 2}})
    assert [i.path for i in unsupported_settings(other)] == ["distributed.strategy", "distributed.num_gpus"]
