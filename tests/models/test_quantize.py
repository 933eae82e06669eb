"""Frozen quantized linears: error per format, forward against F.linear, bitsandbytes storage, logical state dicts.

Weight error bounds (relative Frobenius, N(0, 1) weights): nf4 measures about 0.093 and fp4 about 0.12 with
64-weight blocks; fp8 e4m3 rounds each weight to 3 mantissa bits (at most 1/16 relative, about 0.03 overall);
fp16 to 10 bits.

Layers default to 96 inputs: on CPU, rows that are not whole 64-weight blocks take the PyTorch dequantization
(bitsandbytes' CPU kernel gets them wrong); tests that also take 128 inputs cover bitsandbytes' own kernels.
"""

from __future__ import annotations

import copy
import sys

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from stackwise.models.adapters import LoRALinear  # noqa: E402
from stackwise.models.bitnet import BitLinear  # noqa: E402
from stackwise.models.quantize import (  # noqa: E402
    KINDS,
    QuantizedLinear,
    _dequantize_4bit_flat,
    is_4bit,
    quantize_linears,
)

MAX_ERROR = {"nf4": 0.12, "fp4": 0.15, "fp8": 0.05, "fp16": 1e-3, "fp32": 0.0}


def needs_bnb(kind: str = "nf4") -> None:
    """4-bit formats come from bitsandbytes, an optional dependency."""
    if kind in ("nf4", "fp4"):
        pytest.importorskip("bitsandbytes")


def linear(n_in: int = 96, n_out: int = 48, seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        layer.weight.normal_()  # unit scale, so the error bounds above read as relative errors
    return layer


def storage(q: QuantizedLinear) -> torch.Tensor:
    """The stored bits, comparable with torch.equal whatever the format (fp8 has no == of its own)."""
    data = q.weight.data
    return data.view(torch.uint8) if data.element_size() == 1 else data


@pytest.mark.parametrize("kind", KINDS)
def test_dequantized_weight_is_close_to_the_original(kind: str) -> None:
    needs_bnb(kind)
    lin = linear()
    q = QuantizedLinear.from_linear(lin, kind)
    w = q.dequantized_weight()
    assert w.dtype == torch.float32 and w.shape == (48, 96)
    assert ((w - lin.weight).norm() / lin.weight.norm()).item() <= MAX_ERROR[kind]
    assert (q.in_features, q.out_features, q.kind) == (96, 48, kind)
    torch.testing.assert_close(q.bias, lin.bias, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_in", [96, 128])  # 4-bit on CPU: PyTorch dequantization, bitsandbytes' kernels
def test_forward_is_linear_with_the_dequantized_weight_and_has_nothing_to_train(kind: str, n_in: int) -> None:
    needs_bnb(kind)
    lin = linear(n_in)
    q = QuantizedLinear.from_linear(lin, kind)
    assert ((q.dequantized_weight() - lin.weight).norm() / lin.weight.norm()).item() <= MAX_ERROR[kind]
    assert all(not p.requires_grad for p in q.parameters()) and all(not b.requires_grad for b in q.buffers())
    x = torch.randn(2, 5, n_in, requires_grad=True)
    out = q(x)
    expected = F.linear(x.detach(), q.dequantized_weight(), q.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)  # the input still gets its gradient, so layers below (and adapters) can learn
    torch.testing.assert_close(x.grad, grad @ q.dequantized_weight(), rtol=1e-5, atol=1e-5)
    if not q.is_4bit:  # (packed uint8 storage cannot even be asked to require grad)
        q.requires_grad_(True)  # a caller unfreezing everything still leaves the stored weights alone
        q(x).sum().backward()
        assert q.weight.grad is None and q.bias.grad is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_in", [96, 128])
def test_bf16_inputs_give_bf16_outputs(kind: str, compute_dtype: torch.dtype, n_in: int) -> None:
    needs_bnb(kind)
    q = QuantizedLinear.from_linear(linear(n_in), kind, compute_dtype=compute_dtype)
    x = torch.randn(3, n_in).bfloat16()
    out = q(x)
    assert out.dtype == torch.bfloat16
    expected = F.linear(x.float(), q.dequantized_weight(), q.bias)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=0.1)  # bf16 products, |out| ~ 10


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [True, False])
def test_4bit_dequantization_matches_bitsandbytes_where_its_cpu_kernel_is_right(kind: str, double_quant: bool) -> None:
    """bitsandbytes 0.50's CPU dequantize kernel restarts its blocks at every row, while quantize_4bit runs them
    on across rows; with rows of whole blocks (in_features % 64 == 0) the two layouts coincide."""
    bnb = pytest.importorskip("bitsandbytes")
    whole = QuantizedLinear.from_linear(linear(128), kind, double_quant=double_quant)
    kernel = bnb.functional.dequantize_4bit(whole.weight.data, whole.weight.quant_state)
    assert torch.equal(_dequantize_4bit_flat(whole.weight), kernel)
    split = QuantizedLinear.from_linear(linear(96), kind, double_quant=double_quant)  # blocks straddle rows
    kernel = bnb.functional.dequantize_4bit(split.weight.data, split.weight.quant_state)
    assert torch.equal(split.dequantized_weight(), _dequantize_4bit_flat(split.weight))
    assert not torch.equal(kernel, split.dequantized_weight())  # if this fails, bitsandbytes fixed its kernel


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_4bit_weight_is_packed_bitsandbytes_storage(kind: str) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    q = QuantizedLinear.from_linear(linear(), kind)
    assert isinstance(q.weight, bnb.nn.Params4bit)
    assert q.weight.dtype == torch.uint8 and q.weight.numel() == 96 * 48 // 2  # two 4-bit codes a byte
    assert q.weight.quant_type == kind and q.weight.quant_state.nested  # double quantization, as QLoRA
    assert is_4bit(q) and is_4bit(nn.Sequential(q)) and not is_4bit(QuantizedLinear.from_linear(linear(), "fp8"))


def test_fp8_stores_codes_and_per_row_scales() -> None:
    lin = linear()
    q = QuantizedLinear.from_linear(lin, "fp8")
    assert q.weight.dtype == torch.float8_e4m3fn and q.weight_scale.shape == (48, 1)
    torch.testing.assert_close(q.weight_scale, lin.weight.detach().abs().amax(1, keepdim=True) / 448)
    assert (q.weight.float().abs().amax(1) == 448).all()  # each row's largest weight lands on the top code


def test_unknown_kind_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="nf4, fp4, fp8, fp16, fp32"):
        QuantizedLinear.from_linear(linear(), "int3")


def test_missing_bitsandbytes_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        QuantizedLinear.from_linear(linear(), "nf4")


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_is_logical_fp32_and_loads_back_to_the_same_storage(kind: str) -> None:
    needs_bnb(kind)
    q = QuantizedLinear.from_linear(linear(seed=0), kind, double_quant=False)
    sd = q.state_dict()
    assert set(sd) == {"weight", "bias"} and sd["weight"].dtype == sd["bias"].dtype == torch.float32
    assert torch.equal(sd["weight"], q.dequantized_weight())
    plain = nn.Linear(96, 48)
    plain.load_state_dict(sd)  # a checkpoint of a quantized layer is an ordinary linear's state dict
    with pytest.raises(RuntimeError, match="Unexpected key.*weight.absmax"):
        q.load_state_dict({**sd, "weight.absmax": torch.ones(1)})  # bitsandbytes' own serialisation is not ours

    other = QuantizedLinear.from_linear(linear(seed=1), kind, double_quant=False)
    other.load_state_dict(sd)
    assert torch.equal(other.dequantized_weight(), q.dequantized_weight()) and torch.equal(other.bias, q.bias)
    if kind == "fp4":
        # fp4 has +0 (code 0) and -0 (code 8); -0 dequantizes to -0.0 and quantizes back to code 0
        a, b = storage(q).view(-1), storage(other).view(-1)
        nibbles = torch.stack([a >> 4, a & 15, b >> 4, b & 15]).to(torch.int64)  # (4, bytes)
        differ = nibbles[:2] != nibbles[2:]
        assert ((nibbles[:2][differ] == 8) & (nibbles[2:][differ] == 0)).all()
    else:
        assert torch.equal(storage(other), storage(q))


def test_nf4_quantize_dequantize_is_idempotent_without_double_quant() -> None:
    needs_bnb()
    w = linear().weight.detach()
    q1 = QuantizedLinear(w, None, "nf4", double_quant=False)
    w1 = q1.dequantized_weight()
    q2 = QuantizedLinear(w1, None, "nf4", double_quant=False)
    assert torch.equal(q2.dequantized_weight(), w1) and torch.equal(storage(q2), storage(q1))


def test_double_quant_keeps_the_codes_but_moves_the_block_scales_a_little() -> None:
    """The absmax of each 64-weight block is re-quantized to 8 bits around the mean of all absmaxes; the mean
    of the dequantized absmaxes differs from the original mean, so the second quantization lands elsewhere."""
    needs_bnb()
    w = linear().weight.detach()
    q1 = QuantizedLinear(w, None, "nf4")
    w1 = q1.dequantized_weight()
    q2 = QuantizedLinear(w1, None, "nf4")
    w2 = q2.dequantized_weight()
    assert torch.equal(storage(q2), storage(q1))  # the 4-bit codes
    assert not torch.equal(w2, w1)
    assert (w2 - w1).abs().max() <= 1e-3 * w1.abs().max()


def test_module_to_moves_storage_without_changing_its_format() -> None:
    needs_bnb()
    model = nn.Sequential(*(QuantizedLinear.from_linear(linear(), kind) for kind in KINDS))
    before = [m.dequantized_weight() for m in model]
    model.to(torch.bfloat16).to("cpu").float()
    assert [m.weight.dtype for m in model] == [
        torch.uint8,
        torch.uint8,
        torch.float8_e4m3fn,
        torch.float16,
        torch.float32,
    ]
    assert model[2].weight_scale.dtype == torch.float32
    assert all(torch.equal(m.dequantized_weight(), w) for m, w in zip(model, before, strict=True))
    twin = copy.deepcopy(model)
    x = torch.randn(2, 96)
    assert torch.equal(twin[0](x), model[0](x))


def test_quantize_linears_swaps_linears_and_lora_bases_in_place() -> None:
    needs_bnb()
    wrapped = LoRALinear(linear(32, 16))
    wrapped.add_adapter("a", rank=2, alpha=4.0)
    adapter = wrapped.adapters["a"]
    model = nn.Sequential(linear(16, 32), nn.ReLU(), nn.Sequential(wrapped), nn.Linear(16, 8, bias=False))
    assert quantize_linears(model, "nf4") == 3
    assert isinstance(model[0], QuantizedLinear) and isinstance(model[3], QuantizedLinear) and model[3].bias is None
    assert isinstance(wrapped.base, QuantizedLinear) and wrapped.adapters["a"] is adapter
    assert quantize_linears(model, "nf4") == 0  # already quantized
    assert model(torch.randn(4, 16)).shape == (4, 8)


def test_quantize_linears_refuses_bitnet_before_changing_anything() -> None:
    model = nn.Sequential(nn.Linear(8, 8), BitLinear(8, 8))
    with pytest.raises(ValueError, match="BitNet"):
        quantize_linears(model, "fp8")
    assert type(model[0]) is nn.Linear
    with pytest.raises(ValueError, match="nf4, fp4"):
        quantize_linears(model, "int4")
    with pytest.raises(TypeError, match="from_linear"):
        quantize_linears(model[0], "fp8")  # a layer cannot replace itself in its parent
