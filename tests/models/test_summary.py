"""`stackwise model summary` counts exactly the parameters the builder allocates."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from stackwise.cli import app
from stackwise.config import StackwiseConfig
from stackwise.models.summary import summarize
from tests.helpers import write

torch = pytest.importorskip("torch")

from stackwise.models import build_model  # noqa: E402

VARIANTS = {
    "defaults": {},
    "gqa-untied-bias": {"n_kv_heads": 4, "attention_type": "gqa", "tie_embeddings": False, "bias": True},
    "gpt2-style": {"use_rope": False, "norm_type": "layernorm", "ffn_activation": "gelu", "bias": True},
    "head-dim-relu2": {"head_dim": 32, "ffn_activation": "relu2", "mlp_multiple": 3.0},
    "bidirectional": {"attention_mode": "bidirectional", "vocab_size": 1000},
}


@pytest.mark.parametrize("model", VARIANTS.values(), ids=VARIANTS.keys())
def test_parameter_count_equals_built_model(model: dict) -> None:
    base = {"d_model": 128, "n_layers": 3, "n_heads": 8}
    cfg = StackwiseConfig.from_dict({"model": {**base, **model}, "training": {"seq_len": 64}})
    built = build_model(cfg.model)
    assert summarize(cfg).total == sum(p.numel() for p in built.parameters())


def test_flops_follow_the_formula() -> None:
    d, layers, t, vocab = 64, 2, 32, 100
    cfg = StackwiseConfig.from_dict({"model": {"d_model": d, "n_layers": layers, "n_heads": 4, "vocab_size": vocab}})
    s = summarize(cfg, seq_len=t)
    norms = (2 * layers + 1) * d  # RMSNorm weights: no matmul
    matmuls = s.total - norms  # the embedding lookup is free, but the tied head multiplies by the same matrix
    attention = 4 * t * d * layers // 2  # QK^T and AV, 2 FLOPs per multiply-add, half under a causal mask
    assert s.forward_flops_per_token == 2 * matmuls + attention
    assert s.training_flops_per_token == 3 * s.forward_flops_per_token


def test_summary_command(tmp_path) -> None:
    path = write(tmp_path, "model: {d_model: 64, n_layers: 2, n_heads: 4}\ntraining: {max_steps: 10}\n")
    result = CliRunner().invoke(app, ["model", "summary", str(path), "training.batch_size=2"])
    assert result.exit_code == 0, result.output
    for text in ("attention x2", "MLP x2", "FLOPs per token", "optimizer", "activations"):
        assert text in result.output
