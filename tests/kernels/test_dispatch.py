"""Kernel dispatch: what `auto`, `torch` and `triton` pick per device and dtype, the errors, and the one log line."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from stackwise.kernels import dispatch  # noqa: E402
from stackwise.kernels.dispatch import KernelUnavailableError, select  # noqa: E402
from stackwise.models import transformer  # noqa: E402

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture(autouse=True)
def fresh_log() -> None:
    dispatch._logged.clear()


def pretend_installed(monkeypatch: pytest.MonkeyPatch, installed: bool = True, capability=(9, 0)) -> None:
    """Triton installed or not, and any CUDA device an H100 (compute capability 9.0) unless told otherwise."""
    monkeypatch.setattr(dispatch, "triton_installed", lambda: installed)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def test_torch_is_always_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_installed(monkeypatch, False)
    for device in (CPU, CUDA, MPS):
        assert select("attention", "torch", device, torch.bfloat16) == "torch"


def test_auto_takes_triton_on_cuda_in_half_precision_only(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_installed(monkeypatch)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select("attention", "auto", CUDA, torch.bfloat16) == "triton"
    assert select("attention", "auto", CUDA, torch.float16) == "triton"
    assert select("attention", "auto", CUDA, torch.float32) == "torch"  # cuBLAS/SDPA fp32 is the better choice
    assert select("attention", "auto", CPU, torch.bfloat16) == "torch"  # the interpreter is for tests, not speed
    assert select("attention", "auto", MPS, torch.float16) == "torch"


def test_auto_falls_back_when_the_kernel_cannot_run_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_installed(monkeypatch)
    assert select("attention", "auto", CUDA, torch.bfloat16, limit="no dropout") == "torch"
    pretend_installed(monkeypatch, False)
    assert select("attention", "auto", CUDA, torch.bfloat16) == "torch"


def test_gpus_before_ampere_run_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_installed(monkeypatch, capability=(7, 5))
    assert select("attention", "auto", CUDA, torch.float16) == "torch"
    with pytest.raises(KernelUnavailableError, match=r"compute capability 8.0 \(Ampere\) or newer"):
        select("attention", "triton", CUDA, torch.float16, setting="model.attention_kernel")


@pytest.mark.parametrize(
    "installed,device,interpret,limit,why",
    [
        (False, CUDA, "0", None, "triton package is not installed"),
        (True, CPU, "0", None, "TRITON_INTERPRET=1"),
        (True, MPS, "0", None, "does not compile for mps"),
        (True, CUDA, "0", "the Triton attention kernel has no attention dropout", "no attention dropout"),
    ],
)
def test_forced_triton_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, installed: bool, device: torch.device, interpret: str, limit: str, why: str
) -> None:
    pretend_installed(monkeypatch, installed)
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    with pytest.raises(KernelUnavailableError, match=why) as err:
        select("attention", "triton", device, torch.bfloat16, limit=limit, setting="model.attention_kernel")
    assert str(err.value).startswith("model.attention_kernel is triton, but")
    assert str(err.value).endswith("use auto or torch")


def test_forced_triton_runs_on_the_cpu_under_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_installed(monkeypatch)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select("attention", "triton", CPU, torch.float32) == "triton"
    with pytest.raises(KernelUnavailableError, match="fp16, bf16 or fp32"):
        select("attention", "triton", CPU, torch.float64)


def test_the_choice_is_logged_once_per_op_device_and_dtype(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pretend_installed(monkeypatch)
    with caplog.at_level(logging.INFO, logger="stackwise.kernels"):
        for _ in range(3):
            select("attention", "auto", CUDA, torch.bfloat16)
            select("peer", "auto", CUDA, torch.bfloat16)
        select("attention", "auto", CUDA, torch.float32)
    assert [r.getMessage() for r in caplog.records] == [
        "attention on cuda bfloat16: triton (auto)",
        "peer on cuda bfloat16: triton (auto)",
        "attention on cuda float32: torch (auto)",
    ]


def test_unknown_choice_is_an_error() -> None:
    with pytest.raises(ValueError, match="auto, torch or triton"):
        select("attention", "fast", CPU, torch.float32, setting="model.attention_kernel")


def tiny(**kw) -> torch.nn.Module:
    args = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
    return transformer(**(args | kw))


def test_use_kernels_sets_every_attention_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny()
    assert {layer.attn.impl for layer in model.layers} == {"torch"}  # a bare model runs the reference
    assert model.use_kernels("triton", device=CPU, dtype=torch.float32) == {"attention": "triton"}
    assert {layer.attn.impl for layer in model.layers} == {"triton"}
    assert model.use_kernels("auto", device=CPU, dtype=torch.float32) == {"attention": "torch"}


def test_use_kernels_refuses_attention_dropout_with_triton() -> None:
    model = tiny(attention_dropout=0.1)
    with pytest.raises(KernelUnavailableError, match="model.attention_kernel is triton, but .* no attention dropout"):
        model.use_kernels("triton", device=CPU, dtype=torch.float32)
    assert model.use_kernels("auto", device=CPU, dtype=torch.float32) == {"attention": "torch"}


@pytest.mark.parametrize("kind", ["standard", "mla"])
def test_a_model_on_triton_equals_the_model_on_torch(kind: str) -> None:
    pytest.importorskip("triton")
    extra = dict(attention="mla", q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16,
                 v_head_dim=8) if kind == "mla" else {}  # fmt: skip
    torch.manual_seed(0)
    model = tiny(**extra)
    ids = torch.randint(0, 50, (2, 19))
    results = []
    for impl in ("torch", "triton"):
        model.use_kernels(impl, device=CPU, dtype=torch.float32)
        model.zero_grad()
        logits = model(ids)
        logits.logsumexp(-1).mean().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
