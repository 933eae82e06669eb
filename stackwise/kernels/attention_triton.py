"""Flash attention in Triton, forward and backward, registered as the custom op `stackwise::flash_attention`.

The FlashAttention-2 scheme: the forward streams key/value blocks past a block of queries with an online
softmax and keeps only the output and each row's log-sum-exp; the backward recomputes the probabilities.
The backward is two kernels so that nothing is accumulated with atomics: one program per key block owns
its dK/dV and walks every query head of its group (grouped-query attention reads each K/V head once and
never repeats it in memory), and one program per query block owns its dQ. Head dimensions are padded to a
power of two with masks, so MLA's unequal query/key and value dimensions and any sequence length work.

Shapes and semantics are those of `attention.attention_reference`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .dispatch import interpreting, launch_device

LOG2E = 1.4426950408889634


@triton.jit
def _mm(a, b, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # Triton 3.9's interpreter computes bf16 dots on the raw bit patterns: there (UPCAST) operands are
    # widened to fp32 first. Compiled kernels keep fp16/bf16 operands for the tensor cores.
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PRECISION)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _forward(
    Q, K, V, OUT, LSE,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
    H, G, TQ, TK, DQK, DV, qk_scale,
    CAUSAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BDQK: tl.constexpr, BDV: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H  # int64: b * stride passes 2**31 on large batches
    hk = h // G
    rows = pid_m * BM + tl.arange(0, BM)
    cols = tl.arange(0, BN)
    dq, dv = tl.arange(0, BDQK), tl.arange(0, BDV)
    q_ptrs = Q + b * sqb + h * sqh + rows[:, None] * sqt + dq[None, :]
    q = tl.load(q_ptrs, mask=(rows < TQ)[:, None] & (dq < DQK)[None, :], other=0.0)  # (BM, BDQK)
    k_base = K + b * skb + hk * skh
    v_base = V + b * svb + hk * svh
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, BDV], tl.float32)
    hi = tl.minimum(TK, (pid_m + 1) * BM) if CAUSAL else TK
    for start in range(0, hi, BN):
        keys = start + cols
        kt = tl.load(
            k_base + keys[None, :] * skt + dq[:, None], mask=(keys < TK)[None, :] & (dq < DQK)[:, None], other=0.0
        )  # (BDQK, BN)
        s = _mm(q, kt, UPCAST, PRECISION) * qk_scale  # (BM, BN), log2 units
        keep = (keys < TK)[None, :]
        if CAUSAL:
            keep = keep & (rows[:, None] >= keys[None, :])
        s = tl.where(keep, s, float("-inf"))
        # Every row sees key 0 in the first block, so the running max is finite from then on.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + keys[:, None] * svt + dv[None, :], mask=(keys < TK)[:, None] & (dv < DV)[None, :], other=0.0
        )  # (BN, BDV)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, UPCAST, PRECISION)
        m_i = m_new
    acc = acc / l_i[:, None]
    o_ptrs = OUT + b * sob + h * soh + rows[:, None] * sot + dv[None, :]
    tl.store(o_ptrs, acc.to(OUT.dtype.element_ty), mask=(rows < TQ)[:, None] & (dv < DV)[None, :])
    tl.store(LSE + bh * TQ + rows, m_i + tl.log2(l_i), mask=rows < TQ)


@triton.jit
def _backward_kv(
    Q, K, V, DO, LSE, DELTA, DK, DV_,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdob, sdoh, sdot,
    sdkb, sdkh, sdkt, sdvb, sdvh, sdvt,
    H, HKV, G, TQ, TK, DQK, DV, qk_scale, scale,
    CAUSAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BDQK: tl.constexpr, BDV: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_n, bhk = tl.program_id(0), tl.program_id(1)
    b, hk = (bhk // HKV).to(tl.int64), bhk % HKV  # int64: b * stride passes 2**31 on large batches
    keys = pid_n * BN + tl.arange(0, BN)
    dq, dv = tl.arange(0, BDQK), tl.arange(0, BDV)
    k = tl.load(
        K + b * skb + hk * skh + keys[:, None] * skt + dq[None, :],
        mask=(keys < TK)[:, None] & (dq < DQK)[None, :],
        other=0.0,
    )  # (BN, BDQK)
    v = tl.load(
        V + b * svb + hk * svh + keys[:, None] * svt + dv[None, :],
        mask=(keys < TK)[:, None] & (dv < DV)[None, :],
        other=0.0,
    )  # (BN, BDV)
    dk = tl.zeros([BN, BDQK], tl.float32)
    dvacc = tl.zeros([BN, BDV], tl.float32)
    lo = (pid_n * BN // BM) * BM if CAUSAL else 0  # earlier query blocks see none of these keys
    for g in range(0, G):
        h = hk * G + g
        for start in range(lo, TQ, BM):
            rows = start + tl.arange(0, BM)
            q = tl.load(
                Q + b * sqb + h * sqh + rows[:, None] * sqt + dq[None, :],
                mask=(rows < TQ)[:, None] & (dq < DQK)[None, :],
                other=0.0,
            )  # (BM, BDQK)
            do = tl.load(
                DO + b * sdob + h * sdoh + rows[:, None] * sdot + dv[None, :],
                mask=(rows < TQ)[:, None] & (dv < DV)[None, :],
                other=0.0,
            )  # (BM, BDV)
            lse = tl.load(LSE + (b * H + h) * TQ + rows, mask=rows < TQ, other=0.0)
            delta = tl.load(DELTA + (b * H + h) * TQ + rows, mask=rows < TQ, other=0.0)
            s = _mm(q, tl.trans(k), UPCAST, PRECISION) * qk_scale  # (BM, BN)
            keep = (rows < TQ)[:, None] & (keys < TK)[None, :]
            if CAUSAL:
                keep = keep & (rows[:, None] >= keys[None, :])
            p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)  # the forward's probabilities
            dvacc += _mm(tl.trans(p).to(do.dtype), do, UPCAST, PRECISION)
            dp = _mm(do, tl.trans(v), UPCAST, PRECISION)  # (BM, BN)
            ds = p * (dp - delta[:, None])
            dk += _mm(tl.trans(ds).to(q.dtype), q, UPCAST, PRECISION)
    tl.store(
        DK + b * sdkb + hk * sdkh + keys[:, None] * sdkt + dq[None, :],
        (dk * scale).to(DK.dtype.element_ty),
        mask=(keys < TK)[:, None] & (dq < DQK)[None, :],
    )
    tl.store(
        DV_ + b * sdvb + hk * sdvh + keys[:, None] * sdvt + dv[None, :],
        dvacc.to(DV_.dtype.element_ty),
        mask=(keys < TK)[:, None] & (dv < DV)[None, :],
    )


@triton.jit
def _backward_q(
    Q, K, V, DO, LSE, DELTA, DQ,
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdob, sdoh, sdot, sdqb, sdqh, sdqt,
    H, G, TQ, TK, DQK, DV, qk_scale, scale,
    CAUSAL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BDQK: tl.constexpr, BDV: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), bh % H  # int64: b * stride passes 2**31 on large batches
    hk = h // G
    rows = pid_m * BM + tl.arange(0, BM)
    cols = tl.arange(0, BN)
    dq, dv = tl.arange(0, BDQK), tl.arange(0, BDV)
    q = tl.load(
        Q + b * sqb + h * sqh + rows[:, None] * sqt + dq[None, :],
        mask=(rows < TQ)[:, None] & (dq < DQK)[None, :],
        other=0.0,
    )
    do = tl.load(
        DO + b * sdob + h * sdoh + rows[:, None] * sdot + dv[None, :],
        mask=(rows < TQ)[:, None] & (dv < DV)[None, :],
        other=0.0,
    )
    lse = tl.load(LSE + bh * TQ + rows, mask=rows < TQ, other=0.0)
    delta = tl.load(DELTA + bh * TQ + rows, mask=rows < TQ, other=0.0)
    acc = tl.zeros([BM, BDQK], tl.float32)
    hi = tl.minimum(TK, (pid_m + 1) * BM) if CAUSAL else TK
    for start in range(0, hi, BN):
        keys = start + cols
        k = tl.load(
            K + b * skb + hk * skh + keys[:, None] * skt + dq[None, :],
            mask=(keys < TK)[:, None] & (dq < DQK)[None, :],
            other=0.0,
        )  # (BN, BDQK)
        v = tl.load(
            V + b * svb + hk * svh + keys[:, None] * svt + dv[None, :],
            mask=(keys < TK)[:, None] & (dv < DV)[None, :],
            other=0.0,
        )  # (BN, BDV)
        s = _mm(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
        keep = (rows < TQ)[:, None] & (keys < TK)[None, :]
        if CAUSAL:
            keep = keep & (rows[:, None] >= keys[None, :])
        p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)
        dp = _mm(do, tl.trans(v), UPCAST, PRECISION)
        ds = p * (dp - delta[:, None])
        acc += _mm(ds.to(k.dtype), k, UPCAST, PRECISION)
    tl.store(
        DQ + b * sdqb + h * sdqh + rows[:, None] * sdqt + dq[None, :],
        (acc * scale).to(DQ.dtype.element_ty),
        mask=(rows < TQ)[:, None] & (dq < DQK)[None, :],
    )


# (BM, BN, num_warps, num_stages) per kernel and padded head dim. BM is the query block and BN the key block
# in every kernel: the forward and dQ keep a query block resident, dK/dV a key block. Each setting fits the
# H100's 227 KB of shared memory per block without register spills when compiled for sm_90 (checked with
# ptxas from Triton's wheel; not yet timed on a GPU). fp32 has no tensor-core path: small tiles that fit.
_TILES = {
    64: {"forward": (128, 64, 4, 3), "kv": (32, 128, 8, 3), "q": (128, 32, 4, 3)},
    128: {"forward": (128, 64, 8, 3), "kv": (16, 128, 8, 2), "q": (128, 32, 8, 2)},
    256: {"forward": (64, 32, 8, 2), "kv": (16, 64, 8, 2), "q": (64, 32, 8, 2)},
}
_TILES_FP32 = {"forward": (64, 32, 4, 2), "kv": (32, 64, 4, 2), "q": (64, 32, 4, 2)}


def _config(kernel: str, dqk: int, dv: int, dtype: torch.dtype) -> dict:
    """Launch settings of `kernel` (forward, kv or q): power-of-two tiles at least 16 wide (tl.dot's minimum)."""
    bdqk, bdv = max(16, triton.next_power_of_2(dqk)), max(16, triton.next_power_of_2(dv))
    if interpreting():  # small tiles: the tests' short sequences still cross several blocks
        bm, bn, warps, stages = 16, 16, 1, 1
    elif dtype == torch.float32:
        bm, bn, warps, stages = _TILES_FP32[kernel]
    else:
        bm, bn, warps, stages = _TILES[max(64, bdqk, bdv)][kernel]
    return dict(BM=bm, BN=bn, BDQK=bdqk, BDV=bdv, num_warps=warps, num_stages=stages)


def _flags(dtype: torch.dtype) -> dict:
    return dict(
        UPCAST=interpreting() and dtype == torch.bfloat16,
        PRECISION="ieee" if dtype == torch.float32 else "tf32",
    )


def _last_dim_dense(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op("stackwise::flash_attention_forward", mutates_args=())
def _forward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
    B, H, TQ, DQK = q.shape
    HKV, TK, DV = k.shape[1], k.shape[2], v.shape[-1]
    out = q.new_empty(B, TQ, H, DV).transpose(1, 2)  # (B, H, Tq, Dv) over (B, Tq, H, Dv) memory: no copy after
    lse = q.new_empty(B * H, TQ, dtype=torch.float32)
    cfg = _config("forward", DQK, DV, q.dtype)
    with launch_device(q):
        _forward[(triton.cdiv(TQ, cfg["BM"]), B * H)](
            q, k, v, out, lse,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            H, H // HKV, TQ, TK, DQK, DV, scale * LOG2E,
            CAUSAL=causal, **cfg, **_flags(q.dtype),
        )  # fmt: skip
    return out, lse


@_forward_op.register_fake
def _(q, k, v, causal, scale):
    B, H, TQ, _ = q.shape
    return q.new_empty(B, TQ, H, v.shape[-1]).transpose(1, 2), q.new_empty(B * H, TQ, dtype=torch.float32)


@torch.library.custom_op("stackwise::flash_attention_backward", mutates_args=())
def _backward_op(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    do, q, k, v = _last_dim_dense(do), _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
    B, H, TQ, DQK = q.shape
    HKV, TK, DV = k.shape[1], k.shape[2], v.shape[-1]
    delta = (do.float() * out.float()).sum(-1).reshape(B * H, TQ)  # rowsum(dO * O), the softmax backward's term
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    kv, qc = _config("kv", DQK, DV, q.dtype), _config("q", DQK, DV, q.dtype)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    with launch_device(q):
        _backward_kv[(triton.cdiv(TK, kv["BN"]), B * HKV)](
            q, k, v, do, lse, delta, dk, dv, *strides, *dk.stride()[:3], *dv.stride()[:3],
            H, HKV, H // HKV, TQ, TK, DQK, DV, scale * LOG2E, scale, CAUSAL=causal, **kv, **_flags(q.dtype),
        )  # fmt: skip
        _backward_q[(triton.cdiv(TQ, qc["BM"]), B * H)](
            q, k, v, do, lse, delta, dq, *strides, *dq.stride()[:3],
            H, H // HKV, TQ, TK, DQK, DV, scale * LOG2E, scale, CAUSAL=causal, **qc, **_flags(q.dtype),
        )  # fmt: skip
    return dq, dk, dv


@_backward_op.register_fake
def _(do, q, k, v, out, lse, causal, scale):
    return tuple(torch.empty_like(_last_dim_dense(t)) for t in (q, k, v))  # as the real op allocates them


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal, ctx.scale = causal, scale


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = _backward_op(dout, q, k, v, out, lse, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None
) -> torch.Tensor:
    """(B, H, Tq, Dqk), (B, Hkv, Tk, Dqk), (B, Hkv, Tk, Dv) -> (B, H, Tq, Dv); see `attention_reference`."""
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")
    if k.shape[2] == 0:
        raise ValueError("attention over an empty key sequence")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _forward_op(q, k, v, causal, scale)[0]
