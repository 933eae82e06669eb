"""The Triton flash-attention kernel against the float64 reference: outputs and gradients, every dtype and shape.

On the CPU the kernel runs under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1); on a CUDA
machine the same tests run compiled, and the `gpu`-marked test adds real shapes.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from stackwise.kernels import attention_reference  # noqa: E402
from stackwise.kernels.attention_triton import flash_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (B, H, Hkv, T, Dqk, Dv): MHA, GQA 2:1 and 4:1, MQA, MLA's unequal dims, head dims 64 and 128, odd lengths.
SHAPES = [
    (2, 4, 4, 37, 16, 16),
    (1, 4, 2, 33, 32, 32),
    (1, 8, 2, 19, 16, 16),
    (1, 3, 1, 20, 24, 40),
    (1, 2, 2, 50, 64, 64),
    (1, 2, 1, 17, 128, 128),
    (1, 2, 2, 1, 16, 16),
]


def inputs(B, H, Hkv, T, Dqk, Dv, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # q as the model makes it: a (B, T, H, D) projection seen as (B, H, T, D), not contiguous.
    q = torch.randn(B, T, H, Dqk, generator=g).transpose(1, 2)
    k = torch.randn(B, Hkv, T, Dqk, generator=g)
    v = torch.randn(B, Hkv, T, Dv, generator=g)
    dout = torch.randn(B, H, T, Dv, generator=g)
    return [t.to(DEVICE, dtype) for t in (q, k, v, dout)]


def run(fn, q, k, v, dout, causal):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, causal=causal)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    return [out, *grads]


def errors(got, want):
    return [(g.double() - w).abs().max().item() for g, w in zip(got, want, strict=True)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}Hkv{}T{}D{}Dv{}".format(*s))
def test_matches_reference(shape, causal: bool, dtype: torch.dtype) -> None:
    q, k, v, dout = inputs(*shape, dtype)
    want = run(attention_reference, *(t.double() for t in (q, k, v, dout)), causal)
    got = run(flash_attention, q, k, v, dout, causal)
    assert all(g.dtype == dtype for g in got)
    if dtype == torch.float32:
        for name, err in zip(("out", "dq", "dk", "dv"), errors(got, want), strict=True):
            assert err < 2e-5, f"{name}: {err}"
        return
    # Half precision, FlashAttention's own test criterion: no worse than twice the error of the plain PyTorch
    # attention computed in the same dtype, both against the same float64 reference, plus one unit in the last
    # place at the tensor's largest magnitude (where the two round a final value differently).
    baseline = errors(run(attention_reference, q, k, v, dout, causal), want)
    for name, err, base, w in zip(("out", "dq", "dk", "dv"), errors(got, want), baseline, want, strict=True):
        ulp = torch.finfo(dtype).eps * max(w.abs().max().item(), 1e-3)
        assert err <= 2 * base + ulp, f"{name}: {err} vs torch {base}"


def test_every_output_element_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # Poison every buffer the wrapper allocates: a masked-out store would leave NaN behind.
    new_empty, empty_like = torch.Tensor.new_empty, torch.empty_like
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **kw: new_empty(self, *a, **kw).fill_(math.nan))
    monkeypatch.setattr(torch, "empty_like", lambda t, **kw: empty_like(t, **kw).fill_(math.nan))
    q, k, v, dout = inputs(1, 4, 2, 23, 24, 40, torch.float32)
    for causal in (True, False):
        got = run(flash_attention, q, k, v, dout, causal)
        assert all(torch.isfinite(t).all() for t in got)


def test_gqa_gradients_sum_over_the_group() -> None:
    # dK of a shared head is the sum over its query heads: equal to MHA with K/V repeated, then summed back.
    q, k, v, dout = inputs(1, 4, 2, 21, 16, 16, torch.float32)
    shared = run(flash_attention, q, k, v, dout, True)
    repeated = run(flash_attention, q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), dout, True)
    torch.testing.assert_close(shared[0], repeated[0])
    torch.testing.assert_close(shared[2], repeated[2].view(1, 2, 2, 21, 16).sum(2), atol=1e-5, rtol=1e-5)


def test_custom_op_registration_is_sound() -> None:
    # Schema, fake (meta) implementation and autograd registration, as torch.compile relies on them.
    from stackwise.kernels.attention_triton import _forward_op

    q, k, v, _ = inputs(1, 2, 1, 18, 16, 16, torch.float32)
    torch.library.opcheck(_forward_op, (q, k.requires_grad_(), v, True, 0.25))


def test_compiles_through_the_custom_op() -> None:
    q, k, v, dout = inputs(1, 2, 1, 18, 16, 16, torch.float32)

    def step(q, k, v):
        return flash_attention(q, k, v, causal=True).square().sum()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    for fn in (step, compiled):
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        loss = fn(*leaves)
        loss.backward()
        if fn is step:
            want = [loss, *(t.grad for t in leaves)]
        else:
            for g, w in zip([loss, *(t.grad for t in leaves)], want, strict=True):
                torch.testing.assert_close(g, w)


def test_rejects_heads_that_do_not_group() -> None:
    q, k, v, _ = inputs(1, 3, 2, 8, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        flash_attention(q, k, v, causal=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(4, 12, 12, 1024, 64, 64), (2, 16, 4, 2048, 128, 128), (2, 16, 16, 1000, 192, 128)])
def test_real_shapes_on_gpu(shape, dtype: torch.dtype) -> None:
    q, k, v, dout = inputs(*shape, dtype)
    for causal in (True, False):
        want = [t.double() for t in run(attention_reference, *(t.float() for t in (q, k, v, dout)), causal)]
        baseline = errors(run(attention_reference, q, k, v, dout, causal), want)  # plain PyTorch, same dtype
        got = errors(run(flash_attention, q, k, v, dout, causal), want)
        for err, base, w in zip(got, baseline, want, strict=True):
            assert err <= 2 * base + torch.finfo(dtype).eps * w.abs().max().item()


def test_backward_op_accepts_inputs_without_a_dense_last_dim() -> None:
    from stackwise.kernels.attention_triton import _backward_op, _forward_op

    q, k, v, dout = inputs(1, 2, 1, 18, 16, 16, torch.float32)
    q = q.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, last dimension strided
    out, lse = _forward_op(q, k, v, True, 0.25)
    torch.library.opcheck(_backward_op, (dout, q, k, v, out, lse, True, 0.25))


def test_dropout_is_never_silently_dropped() -> None:
    from stackwise.kernels import attention

    q, k, v, _ = inputs(1, 2, 2, 8, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="no attention dropout"):
        attention(q, k, v, causal=True, impl="triton", dropout=0.1)
