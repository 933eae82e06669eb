"""BitNet b1.58 layers: ternary absmean weights, 8-bit per-token activations, straight-through gradients, SubLN."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from stackwise.config import StackwiseConfig  # noqa: E402
from stackwise.models import UnsupportedArchitectureError, build_model, to_hf  # noqa: E402
from stackwise.models.bitnet import BitLinear, quantize_activations, ternary  # noqa: E402
from stackwise.models.layers import RMSNorm  # noqa: E402
from stackwise.models.summary import summarize  # noqa: E402


def test_ternary_weights_are_three_values_times_absmean() -> None:
    w = torch.randn(16, 32, dtype=torch.float64)
    q = ternary(w)
    scale = w.abs().mean()
    assert set((q / scale).round().unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(q / scale, (w / scale).round().clamp(-1, 1))


def test_activations_have_at_most_256_levels_per_token_and_small_error() -> None:
    x = torch.randn(4, 64, dtype=torch.float64)
    q = quantize_activations(x, bits=8, per_token=True)
    for row, qrow in zip(x, q, strict=True):
        step = row.abs().max() / 127
        assert ((qrow / step).round() - qrow / step).abs().max() < 1e-9  # on the grid of its own token
        assert (qrow - row).abs().max() <= step / 2 + 1e-12
    per_tensor = quantize_activations(x, bits=8, per_token=False)
    step = x.abs().max() / 127
    assert ((per_tensor / step).round() - per_tensor / step).abs().max() < 1e-9


def test_bitlinear_forward_and_straight_through_gradients() -> None:
    torch.manual_seed(0)
    layer = BitLinear(32, 16, bias=False).double()
    x = torch.randn(3, 32, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    xq, wq = quantize_activations(x.detach()), ternary(layer.weight.detach())
    torch.testing.assert_close(out, xq @ wq.t())
    grad = torch.randn_like(out)
    out.backward(grad)
    torch.testing.assert_close(layer.weight.grad, grad.t() @ xq)  # as if the quantizers were the identity
    torch.testing.assert_close(x.grad, grad @ wq)


def test_builder_applies_bitnet_and_subln() -> None:
    cfg = StackwiseConfig.from_dict(
        {
            "model": {
                "d_model": 64,
                "n_layers": 2,
                "n_heads": 4,
                "ffn_activation": "relu2",
                "quantization": {"weight_bits": 1.58, "activation_bits": 8},
                "subln": {"enabled": True, "eps": 1e-6},
            }
        }
    )
    model = build_model(cfg.model)
    layer = model.layers[0]
    assert isinstance(layer.attn.q_proj, BitLinear) and isinstance(layer.mlp.gate_proj, BitLinear)
    assert isinstance(layer.attn.o_proj[0], RMSNorm) and isinstance(layer.attn.o_proj[1], BitLinear)
    assert isinstance(layer.mlp.down_proj[0], RMSNorm) and layer.mlp.down_proj[0].eps == 1e-6
    assert type(model.head) is torch.nn.Linear and type(model.embed) is torch.nn.Embedding  # stay full precision
    assert summarize(cfg).total == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 100, (2, 6))
    loss = model(ids).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bitnet_models_are_not_exported(tmp_path) -> None:
    cfg = StackwiseConfig.from_dict({"model": {"d_model": 32, "n_layers": 1, "n_heads": 4, "quantization": {}}})
    with pytest.raises(UnsupportedArchitectureError, match="BitNet"):
        to_hf(build_model(cfg.model), tmp_path / "x")
