"""PEER's Triton kernels (under the interpreter on CPU) against the PyTorch reference in float64.

Tolerances: the kernels compute in fp32 from the given inputs and round each result once to the output
dtype, so the float64 reference on the same (upcast) inputs is off by about one rounding: fp32 1e-5;
fp16 rtol 2e-3 (2 ulp); bf16 rtol 1.6e-2 (2 ulp). atol 1e-4 (1e-5 in fp32) covers fp32 accumulation
where sums of O(1) terms cancel to near zero.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from stackwise.kernels import dispatch  # noqa: E402
from stackwise.kernels.peer import (  # noqa: E402
    peer_experts,
    peer_experts_reference,
    peer_retrieve,
    peer_retrieve_reference,
)
from stackwise.models.peer import PEER  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and not dispatch.interpreting(), reason="needs a GPU or TRITON_INTERPRET=1"
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 2e-3, "atol": 1e-4},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-4},
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(actual.double(), expected, **TOLERANCE[dtype])


def leaves(tensors: list[torch.Tensor], dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The inputs in `dtype`, and the same values in float64, each a fresh leaf that wants a gradient."""
    low = [t.to(DEVICE, dtype).requires_grad_() for t in tensors]
    return low, [t.detach().double().requires_grad_() for t in low]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sizes,k", [((5, 7), 3), ((8, 6), 4), ((70, 3), 4)], ids=["5x7", "8x6", "70x3"])
def test_retrieval_matches_reference(sizes: tuple[int, int], k: int, dtype: torch.dtype) -> None:
    """Same experts as the reference; scores and gradients for queries and both sub-key sets agree.

    70 sub-keys span two blocks of the running top k; 3 sub-keys are fewer than k.
    """
    torch.manual_seed(0)
    N, H, Q = 13, 2, 12
    (q, a, b), (q64, a64, b64) = leaves(
        [torch.randn(N, H, Q), torch.randn(H, sizes[0], Q // 2), torch.randn(H, sizes[1], Q // 2)], dtype
    )
    scores, indices = peer_retrieve(q, [a, b], k, "triton")
    ref_scores, ref_indices = peer_retrieve_reference(q64, [a64, b64], k)
    assert indices.dtype == torch.int64 and scores.dtype == dtype
    assert torch.equal(indices.cpu(), ref_indices.cpu())
    close(scores, ref_scores, dtype)
    grad = torch.randn(N, H, k, dtype=torch.float64, device=DEVICE)
    scores.backward(grad.to(dtype))
    ref_scores.backward(grad.to(dtype).double())
    for low, ref in zip((q, a, b), (q64, a64, b64), strict=True):
        close(low.grad, ref.grad, dtype)


def expert_inputs(N: int, S: int, D: int, hidden: int, E: int, used: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """x, gates, down, up, and indices drawn from the first `used` of E experts (many pairs per expert)."""
    tensors = [
        torch.randn(N, D),
        torch.randn(N, S).softmax(-1),
        torch.randn(E, hidden * D) / math.sqrt(D),
        torch.randn(E, hidden * D),
    ]
    return tensors, torch.randint(0, used, (N, S), device=DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D,hidden", [(12, 1), (24, 2)])
def test_experts_match_reference(D: int, hidden: int, dtype: torch.dtype) -> None:
    """Output and gradients for x, gates and both tables; 60 pairs on 6 experts, a 7th expert unused."""
    torch.manual_seed(0)
    tensors, indices = expert_inputs(N=10, S=6, D=D, hidden=hidden, E=7, used=6)
    (x, gates, down, up), (x64, gates64, down64, up64) = leaves(tensors, dtype)
    out = peer_experts(x, gates, indices, down, up, hidden, "triton")
    ref = peer_experts_reference(x64, gates64, indices, down64, up64, hidden)
    assert out.dtype == dtype
    close(out, ref, dtype)
    grad = torch.randn_like(ref).to(dtype)
    out.backward(grad)
    ref.backward(grad.double())
    for low, high in zip((x, gates, down, up), (x64, gates64, down64, up64), strict=True):
        close(low.grad, high.grad, dtype)
    assert not down.grad[6].any() and not up.grad[6].any()  # exactly zero for the unused expert


def test_experts_backward_is_deterministic_and_writes_every_element(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffers from torch.empty start as NaN (-1 for integers): odd sizes must still come back finite."""
    torch.manual_seed(0)
    tensors, indices = expert_inputs(N=7, S=5, D=13, hidden=3, E=9, used=8)
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan") if t.is_floating_point() else -1)

    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(real_empty_like(*a, **kw)))
    grads = []
    for _ in range(2):
        x, gates, down, up = (t.to(DEVICE).requires_grad_() for t in tensors)
        out = peer_experts(x, gates, indices, down, up, 3, "triton")
        out.square().sum().backward()
        grads.append([out.detach()] + [t.grad for t in (x, gates, down, up)])
    monkeypatch.undo()
    for t in grads[0]:
        assert torch.isfinite(t).all()
    for first, second in zip(*grads, strict=True):
        assert torch.equal(first, second)
    scores, chosen = peer_retrieve(torch.randn(7, 3, 10), [torch.randn(3, 5, 5), torch.randn(3, 9, 5)], 3, "triton")
    assert torch.isfinite(scores).all() and (chosen >= 0).all()


def test_frozen_tables_still_pass_gradients_through() -> None:
    """With the expert tables frozen, x and the gates still get their gradients (the table kernel is skipped)."""
    torch.manual_seed(0)
    (x, gates, down, up), indices = expert_inputs(N=6, S=4, D=8, hidden=1, E=5, used=5)
    x, gates = x.to(DEVICE).requires_grad_(), gates.to(DEVICE).requires_grad_()
    x64, gates64 = x.detach().double().requires_grad_(), gates.detach().double().requires_grad_()
    peer_experts(x, gates, indices, down.to(DEVICE), up.to(DEVICE), 1, "triton").sum().backward()
    peer_experts_reference(x64, gates64, indices, down.double(), up.double(), 1).sum().backward()
    close(x.grad, x64.grad, torch.float32)
    close(gates.grad, gates64.grad, torch.float32)


def make_layer(hidden: int) -> PEER:
    torch.manual_seed(0)
    kwargs = {"num_experts": 48, "num_experts_per_tok": 3, "num_heads": 2, "product_key_dim": (8, 6)}
    return PEER(12, **kwargs, query_dim=12, expert_hidden_size=hidden, track_usage=True).to(DEVICE)


@pytest.mark.parametrize("hidden", [1, 2])
def test_layer_triton_equals_torch(hidden: int) -> None:
    """The whole layer, forward, parameter gradients and usage counts, with either implementation."""
    x, grad = torch.randn(2, 5, 12, device=DEVICE), torch.randn(2, 5, 12, device=DEVICE)
    results = []
    for impl in ("torch", "triton"):
        layer = make_layer(hidden)
        layer.impl = impl
        out = layer(x)
        out.backward(grad)
        results.append((out, {n: p.grad for n, p in layer.named_parameters()}, layer.usage.clone()))
    (out_t, grads_t, usage_t), (out_k, grads_k, usage_k) = results
    torch.testing.assert_close(out_k, out_t, rtol=1e-5, atol=1e-5)
    assert grads_k.keys() == grads_t.keys()
    for name, expected in grads_t.items():
        # Both sides sum in fp32, in different orders: the error scales with the largest terms, not each element.
        atol = 1e-6 * expected.abs().max().item()
        torch.testing.assert_close(grads_k[name], expected, rtol=1e-5, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    assert torch.equal(usage_k, usage_t)


def test_compiled_graph_matches_eager() -> None:
    """torch.compile traces through the custom ops (fullgraph): same output and gradients as eager."""
    torch.manual_seed(0)
    N, H, Q, k, D, hidden = 6, 2, 8, 3, 12, 2
    E = 5 * 4

    def fn(q: torch.Tensor, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, down: torch.Tensor, up: torch.Tensor):
        scores, indices = peer_retrieve(q, [a, b], k, "triton")  # (N, H, k)
        gates = scores.softmax(-1).view(N, H * k)
        return peer_experts(x, gates, indices.view(N, H * k), down, up, hidden, "triton")

    inputs = [
        torch.randn(N, H, Q),
        torch.randn(H, 5, Q // 2),
        torch.randn(H, 4, Q // 2),
        torch.randn(N, D),
        torch.randn(E, hidden * D),
        torch.randn(E, hidden * D),
    ]
    results = []
    for run in (fn, torch.compile(fn, backend="aot_eager", fullgraph=True)):
        leaves_ = [t.clone().to(DEVICE).requires_grad_() for t in inputs]
        out = run(*leaves_)
        out.square().sum().backward()
        results.append([out.detach()] + [t.grad for t in leaves_])
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6)


def test_triton_limit_names_the_reason() -> None:
    layer = PEER(12, num_experts=60, num_experts_per_tok=2, num_heads=1, product_key_dim=(4, 3, 5), query_dim=12)
    assert "two sub-key sets" in layer.triton_limit()
    assert make_layer(1).triton_limit() is None
    wide = PEER(12, num_experts=4096, num_experts_per_tok=33, num_heads=1, product_key_dim=(64, 64), query_dim=8)
    assert "at most 32" in wide.triton_limit()
    with pytest.raises(dispatch.KernelUnavailableError, match="two sub-key sets"):
        dispatch.select("peer", "triton", torch.device(DEVICE), torch.float32, limit=layer.triton_limit())


def test_custom_ops_accept_non_contiguous_inputs() -> None:
    # The fake (shape) functions must describe the outputs the real ops allocate, strides included, or
    # torch.compile's generated code asserts on them; opcheck compares the two.
    from stackwise.kernels import peer_triton

    torch.manual_seed(0)
    N, D, E, S = 7, 12, 9, 4
    x = torch.randn(D, N).t().requires_grad_()  # (N, D), column-major
    gates = torch.rand(N, S).softmax(-1).requires_grad_()
    indices = torch.randint(0, E, (N, S))
    down, up = (torch.randn(E, D, requires_grad=True) for _ in range(2))
    torch.library.opcheck(peer_triton._experts_op, (x, gates, indices, down, up, 1))
