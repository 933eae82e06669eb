"""LoRA adapters against `W + (alpha/r)·B·A` in float64 and against peft; merging, gradients, QLoRA trunks.

Tolerances: float64 formulas 1e-12; float32 against peft 1e-6 (same products, other summation order). Merging
into a quantized base re-quantizes `W_q + delta`, which is just another weight to quantize, so the merged
weight is held to the bound a fresh nf4 quantization meets (relative Frobenius error below 0.12, measured 0.09).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from stackwise.config.model import ModelConfig  # noqa: E402
from stackwise.models.adapters import LoRALinear, adapter_parameters, attach_lora, merge_all  # noqa: E402
from stackwise.models.bitnet import BitLinear  # noqa: E402
from stackwise.models.builders import build_model  # noqa: E402
from stackwise.models.quantize import QuantizedLinear, quantize_linears  # noqa: E402

EXACT = dict(rtol=1e-12, atol=1e-12)
F32 = dict(rtol=1e-6, atol=1e-6)


def randomize_adapters_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random A and B, so adapters actually change outputs (a fresh B is zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in adapter_parameters(module):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def test_a_fresh_adapter_changes_nothing_and_is_initialised_like_peft() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(256, 8))
    x = torch.randn(3, 256)
    before = layer(x)
    layer.add_adapter("a", rank=4, alpha=8.0)
    assert torch.equal(layer(x), before)
    adapter = layer.adapters["a"]
    assert adapter.A.shape == (4, 256) and adapter.B.shape == (8, 4) and adapter.scale == 2.0
    assert adapter.A.dtype == adapter.B.dtype == torch.float32 and not adapter.B.any()
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert 0.9 * bound < adapter.A.abs().max() <= bound


def test_output_is_base_plus_scaled_low_rank_product_in_float64() -> None:
    torch.manual_seed(0)
    base = nn.Linear(12, 6).double()
    layer = LoRALinear(base)
    layer.add_adapter("a", rank=3, alpha=5.0)
    randomize_adapters_(layer)
    A, B = layer.adapters["a"].A.double(), layer.adapters["a"].B.double()
    x = torch.randn(2, 4, 12, dtype=torch.float64)
    expected = x @ (base.weight + 5.0 / 3 * B @ A).T + base.bias
    torch.testing.assert_close(layer(x), expected, **EXACT)
    torch.testing.assert_close(layer.merged_weight().double(), (base.weight + 5.0 / 3 * B @ A), rtol=1e-6, atol=1e-6)
    assert set(layer.state_dict()) == {"base.weight", "base.bias", "adapters.a.A", "adapters.a.B"}


def test_two_adapters_add_up_and_can_be_removed() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(10, 7).double())
    layer.add_adapter("a", rank=2, alpha=4.0)
    layer.add_adapter("b", rank=3, alpha=1.5)
    randomize_adapters_(layer)
    x = torch.randn(5, 10, dtype=torch.float64)
    base = layer.base(x)
    delta = layer.delta_weight().double()
    torch.testing.assert_close(delta, (layer.delta_weight("a") + layer.delta_weight("b")).double(), **EXACT)
    torch.testing.assert_close(layer(x), base + x @ delta.T, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="already exists"):
        layer.add_adapter("a", rank=2, alpha=1.0)
    layer.remove_adapter("b")
    torch.testing.assert_close(layer(x), base + x @ layer.delta_weight("a").double().T, rtol=1e-6, atol=1e-6)


def test_matches_peft_forward_and_merge_and_unload() -> None:
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    ours = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    ours.load_state_dict(reference.state_dict())
    config = peft.LoraConfig(r=4, lora_alpha=6, target_modules=["0", "2"], lora_dropout=0.0, init_lora_weights=False)
    reference = peft.get_peft_model(reference, config)  # init_lora_weights=False: B is random, not zero
    assert attach_lora(ours, "default", rank=4, alpha=6.0) == 4 * (8 + 16) + 4 * (16 + 4)
    with torch.no_grad():
        for i in (0, 2):
            theirs = reference.base_model.model[i]
            ours[i].adapters["default"].A.copy_(theirs.lora_A["default"].weight)
            ours[i].adapters["default"].B.copy_(theirs.lora_B["default"].weight)
    x = torch.randn(6, 8)
    torch.testing.assert_close(ours(x), reference(x), **F32)
    merged, theirs = merge_all(ours), reference.merge_and_unload()
    assert type(merged[0]) is nn.Linear and type(theirs[0]) is nn.Linear
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[key], value, **F32)


def test_merge_adapter_into_a_linear_base_keeps_outputs() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8))
    layer.add_adapter("a", rank=2, alpha=4.0)
    layer.add_adapter("b", rank=2, alpha=2.0)
    randomize_adapters_(layer)
    x = torch.randn(4, 16)
    before = layer(x)
    layer.merge_adapter("a")
    assert list(layer.adapters) == ["b"] and type(layer.base) is nn.Linear
    torch.testing.assert_close(layer(x), before, **F32)


@pytest.mark.parametrize(("kind", "max_error"), [("nf4", 0.12), ("fp32", 1e-7)])
def test_merge_adapter_into_a_quantized_base_requantizes(kind: str, max_error: float) -> None:
    if kind == "nf4":
        pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    layer = LoRALinear(QuantizedLinear.from_linear(nn.Linear(64, 32), kind))
    layer.add_adapter("a", rank=4, alpha=8.0)
    randomize_adapters_(layer)
    x = torch.randn(4, 64)
    target = layer.merged_weight()  # dequantized base + delta
    before = layer(x)
    layer.merge_adapter("a")
    assert not layer.adapters and isinstance(layer.base, QuantizedLinear) and layer.base.kind == kind
    merged = layer.base.dequantized_weight()
    assert ((merged - target).norm() / target.norm()).item() <= max_error
    torch.testing.assert_close(layer(x), F.linear(x, merged, layer.base.bias), **F32)
    if kind == "fp32":
        torch.testing.assert_close(layer(x), before, **F32)


def test_only_adapters_get_gradients_over_a_frozen_or_quantized_base() -> None:
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    frozen = nn.Linear(16, 16)
    frozen.requires_grad_(False)
    model = nn.Sequential(frozen, nn.ReLU(), QuantizedLinear.from_linear(nn.Linear(16, 8), "nf4"))
    attach_lora(model, "a", rank=2, alpha=2.0)
    randomize_adapters_(model)
    model(torch.randn(3, 16)).square().sum().backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert (
        trainable
        == {name for name, _ in adapter_parameters(model)}
        == {
            "0.adapters.a.A",
            "0.adapters.a.B",
            "2.adapters.a.A",
            "2.adapters.a.B",
        }
    )
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in adapter_parameters(model))


def test_adapters_learn_a_regression_target_over_an_nf4_base() -> None:
    """The target is the quantized network's own output plus a linear change, which the adapters must learn
    (only approximately: rank 4 through a ReLU; five seeds end at 0.36-0.47 of the first loss)."""
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    assert quantize_linears(model, "nf4") == 2
    attach_lora(model, "a", rank=4, alpha=4.0)
    x = torch.randn(128, 32)
    with torch.no_grad():
        y = model(x) + 0.5 * nn.Linear(32, 8)(x)
    optimizer = torch.optim.SGD([p for _, p in adapter_parameters(model)], lr=3.0)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_autocast_runs_the_adapter_path_in_bf16_with_fp32_parameters() -> None:
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    layer = LoRALinear(QuantizedLinear.from_linear(nn.Linear(64, 32), "nf4"))
    layer.add_adapter("a", rank=4, alpha=8.0)
    randomize_adapters_(layer)
    x = torch.randn(4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16 and layer.adapters["a"].A.dtype == torch.float32
    torch.testing.assert_close(out.float(), layer(x), rtol=3e-2, atol=5e-2)


def test_merge_all_gives_an_exportable_model_with_the_same_logits() -> None:
    pytest.importorskip("bitsandbytes")
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=16)
    fresh_keys = list(build_model(cfg, vocab_size=50).state_dict())
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=50)
    assert quantize_linears(model.layers[0], "nf4") == 7  # q, k, v, o, gate, up, down
    linears = [m for m in model.layers[0].modules() if isinstance(m, QuantizedLinear)]
    assert attach_lora(model.layers[0], "a", rank=2, alpha=4.0) == sum(
        2 * (m.in_features + m.out_features) for m in linears
    )
    randomize_adapters_(model)
    assert "layers.0.attn.q_proj.base.weight" in model.state_dict()
    ids = torch.randint(0, 50, (2, 8))
    adapted = model(ids)
    merge_all(model)
    assert list(model.state_dict()) == fresh_keys
    q_proj = model.layers[0].attn.q_proj
    assert type(q_proj) is nn.Linear and q_proj.weight.dtype == torch.float32 and q_proj.weight.requires_grad
    torch.testing.assert_close(model(ids), adapted, rtol=1e-4, atol=1e-4)


def test_a_qlora_checkpoint_is_plain_fp32_and_reloads_exactly() -> None:
    """Without double quantization, re-quantizing the saved (dequantized) weights restores the same storage."""
    pytest.importorskip("bitsandbytes")

    def qlora(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
        quantize_linears(model, "nf4", double_quant=False)
        attach_lora(model, "a", rank=2, alpha=4.0)
        return randomize_adapters_(model, seed)

    saved = qlora(0)
    state = saved.state_dict()
    assert set(state) == {
        f"{i}.{k}" for i in (0, 2) for k in ("base.weight", "base.bias", "adapters.a.A", "adapters.a.B")
    }
    assert all(v.dtype == torch.float32 for v in state.values())
    restored = qlora(1)
    restored.load_state_dict(state)
    x = torch.randn(4, 32)
    assert torch.equal(restored(x), saved(x))
    assert torch.equal(restored[0].base.weight.data, saved[0].base.weight.data)  # packed nf4 codes


def test_bitnet_layers_are_refused_before_anything_changes() -> None:
    model = nn.Sequential(nn.Linear(8, 8), BitLinear(8, 8))
    with pytest.raises(ValueError, match="LoRA on BitNet layers is not supported"):
        attach_lora(model, "a", rank=2, alpha=2.0)
    assert type(model[0]) is nn.Linear
    with pytest.raises(ValueError, match="BitNet"):
        LoRALinear(BitLinear(8, 8))


def test_attaching_twice_adds_a_second_adapter_instead_of_wrapping_again() -> None:
    model = nn.Sequential(nn.Linear(8, 4))
    attach_lora(model, "a", rank=2, alpha=2.0)
    assert attach_lora(model, "b", rank=1, alpha=1.0) == 8 + 4
    assert (
        isinstance(model[0], LoRALinear) and type(model[0].base) is nn.Linear and list(model[0].adapters) == ["a", "b"]
    )
    with pytest.raises(ValueError, match="already exists"):
        attach_lora(model, "a", rank=2, alpha=2.0)
    assert attach_lora(model[0], "c", rank=1, alpha=1.0) == 12  # a LoRALinear itself takes one more adapter
