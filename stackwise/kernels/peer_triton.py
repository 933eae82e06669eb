"""PEER's Triton kernels (retrieval over two sub-key sets; the expert mixture, forward and backward) as torch ops.

Both are registered with `torch.library.custom_op` (`stackwise::peer_retrieve`, `stackwise::peer_experts`),
with fake (shape) functions and autograd, so `torch.compile` traces through them as single nodes.

Retrieval: a program takes 16 tokens of one head, scores blocks of sub-keys with `tl.dot`, keeps a running
top k per sub-key set, adds the k x k product candidates and keeps their top k; the (N, Hr, N_i) score matrix
is never stored. Its backward runs in PyTorch: the output gradient is scattered into dense (N, Hr, N_i)
sub-score gradients (each chosen expert's gradient goes to its two sub-keys), then two matmuls per set;
that buffer is the size of the score matrix the reference keeps, and on CUDA scatter_add_ sums experts
that share a sub-key with atomics (deterministic only under torch.use_deterministic_algorithms).

Experts: a program per token reads the chosen experts' rows straight from the (E, hidden * D) tables.
The backward's per-token program gives dx, and per (token, slot, j) coefficients; the expert gradients are
then summed without atomics: the (token, slot) pairs are sorted by expert, and one program per used expert
walks its segment and writes its rows once (deterministic). Unused experts keep exact zeros.

Every kernel computes in fp32 and stores in the tensors' own dtypes (indices int64).

Both ops live in this one module, imported only when a Triton path is asked for (`triton.jit` reads
TRITON_INTERPRET at import); with their wrappers, fake functions and autograd that is past 300 lines.
"""

import torch
import triton
import triton.language as tl

from .dispatch import interpreting, launch_device

BLOCK_TOKENS = 16  # tl.dot wants at least 16 rows
INV_SQRT2 = tl.constexpr(0.7071067811865476)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(1, n))


# ---- retrieval ----------------------------------------------------------------------------------------------


@triton.jit
def _merge_topk(run_v, run_i, blk_v, s0, K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr):
    """Per row, the top K of a running top K (BLOCK_N, BLOCK_K) and a block of sub-keys s0.. (BLOCK_N, BLOCK_S)."""
    run_cols = tl.arange(0, BLOCK_K)[None, :]
    blk_cols = tl.arange(0, BLOCK_S)[None, :]
    new_v = tl.zeros_like(run_v) + float("-inf")
    new_i = tl.zeros_like(run_i)
    for t in range(K):
        m_run, a_run = tl.max(run_v, axis=1, return_indices=True)
        m_blk, a_blk = tl.max(blk_v, axis=1, return_indices=True)
        # On equal scores the running set, whose sub-keys come from earlier blocks (lower indices), wins.
        take_run = m_run >= m_blk
        i_run = tl.sum(tl.where(run_cols == a_run[:, None], run_i, 0), axis=1)
        new_v = tl.where(run_cols == t, tl.where(take_run, m_run, m_blk)[:, None], new_v)
        new_i = tl.where(run_cols == t, tl.where(take_run, i_run, s0 + a_blk)[:, None], new_i)
        run_v = tl.where(take_run[:, None] & (run_cols == a_run[:, None]), float("-inf"), run_v)
        blk_v = tl.where(~take_run[:, None] & (blk_cols == a_blk[:, None]), float("-inf"), blk_v)
    return new_v, new_i


@triton.jit
def _subkey_topk(
    q_ptr, key_ptr, tokens, token_mask, n_keys, q_stride, QS,
    K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Top K scores and sub-key indices (BLOCK_N, BLOCK_K) of one query part against one head's sub-key set."""
    run_v = tl.full((BLOCK_N, BLOCK_K), float("-inf"), tl.float32)
    run_i = tl.zeros((BLOCK_N, BLOCK_K), tl.int32)
    for s0 in range(0, n_keys, BLOCK_S):
        subkeys = s0 + tl.arange(0, BLOCK_S)
        acc = tl.zeros((BLOCK_N, BLOCK_S), tl.float32)
        for d0 in range(0, QS, BLOCK_Q):
            d = d0 + tl.arange(0, BLOCK_Q)
            q_mask = token_mask[:, None] & (d < QS)[None, :]
            q = tl.load(q_ptr + tokens[:, None] * q_stride + d[None, :], mask=q_mask, other=0)  # (BLOCK_N, BLOCK_Q)
            k_mask = (subkeys < n_keys)[None, :] & (d < QS)[:, None]
            kt = tl.load(key_ptr + subkeys[None, :] * QS + d[:, None], mask=k_mask, other=0)  # (BLOCK_Q, BLOCK_S)
            if UPCAST:
                q, kt = q.to(tl.float32), kt.to(tl.float32)
            acc = tl.dot(q, kt, acc, input_precision="ieee")
        acc = tl.where((subkeys < n_keys)[None, :], acc, float("-inf"))
        run_v, run_i = _merge_topk(run_v, run_i, acc, s0, K, BLOCK_K, BLOCK_S)
    return run_v, run_i


@triton.jit
def _retrieve_kernel(
    q_ptr, key_a_ptr, key_b_ptr, scores_ptr, indices_ptr, N, H, N_A, N_B, QS,
    K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Top K experts for BLOCK_N tokens of one head: queries (N, H, 2 * QS), sub-keys (H, N_i, QS)."""
    head = tl.program_id(1)
    tokens = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    token_mask = tokens < N
    q_head = q_ptr + head * 2 * QS
    va, ia = _subkey_topk(
        q_head, key_a_ptr + head * N_A * QS, tokens, token_mask, N_A, H * 2 * QS, QS,
        K, BLOCK_N, BLOCK_S, BLOCK_Q, BLOCK_K, UPCAST,
    )  # fmt: skip
    vb, ib = _subkey_topk(
        q_head + QS, key_b_ptr + head * N_B * QS, tokens, token_mask, N_B, H * 2 * QS, QS,
        K, BLOCK_N, BLOCK_S, BLOCK_Q, BLOCK_K, UPCAST,
    )  # fmt: skip
    cols = tl.arange(0, BLOCK_K)
    valid = (cols < K)[:, None] & (cols < K)[None, :]
    pair_v = tl.where(valid[None, :, :], va[:, :, None] + vb[:, None, :], float("-inf"))  # (BLOCK_N, BLOCK_K, BLOCK_K)
    pair_i = ia[:, :, None] * N_B + ib[:, None, :]
    pair_v = tl.reshape(pair_v, (BLOCK_N, BLOCK_K * BLOCK_K))  # row-major, as product_topk flattens
    pair_i = tl.reshape(pair_i, (BLOCK_N, BLOCK_K * BLOCK_K))
    pair_cols = tl.arange(0, BLOCK_K * BLOCK_K)[None, :]
    out = (tokens * H + head) * K
    for t in range(K):
        best_v, best = tl.max(pair_v, axis=1, return_indices=True)
        best_i = tl.sum(tl.where(pair_cols == best[:, None], pair_i, 0), axis=1)
        tl.store(scores_ptr + out + t, best_v.to(scores_ptr.dtype.element_ty), mask=token_mask)
        tl.store(indices_ptr + out + t, best_i.to(tl.int64), mask=token_mask)
        pair_v = tl.where(pair_cols == best[:, None], float("-inf"), pair_v)


@torch.library.custom_op("stackwise::peer_retrieve", mutates_args=())
def _retrieve_op(
    queries: torch.Tensor, key_a: torch.Tensor, key_b: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    queries, key_a, key_b = queries.contiguous(), key_a.contiguous(), key_b.contiguous()
    N, H, Q = queries.shape
    n_a, n_b = key_a.shape[1], key_b.shape[1]
    scores = torch.empty(N, H, k, dtype=queries.dtype, device=queries.device)
    indices = torch.empty(N, H, k, dtype=torch.int64, device=queries.device)
    if N == 0 or H == 0 or k == 0:
        return scores, indices
    same = queries.dtype == key_a.dtype == key_b.dtype
    # tl.dot takes one operand dtype; fp32 goes through it as fp32 ("ieee", no tf32). And triton 3.9's
    # interpreter computes bf16 arithmetic on the raw bit patterns, so there bf16 is upcast before tl.dot.
    upcast = not same or queries.dtype == torch.float32 or (interpreting() and queries.dtype == torch.bfloat16)
    grid = (triton.cdiv(N, BLOCK_TOKENS), H)
    with launch_device(queries):
        _retrieve_kernel[grid](
            queries, key_a, key_b, scores, indices, N, H, n_a, n_b, Q // 2,
            K=k, BLOCK_N=BLOCK_TOKENS, BLOCK_S=min(64, max(16, _pow2(max(n_a, n_b)))),
            BLOCK_Q=min(64, max(16, _pow2(Q // 2))), BLOCK_K=_pow2(k), UPCAST=upcast,
        )  # fmt: skip
    return scores, indices


@_retrieve_op.register_fake
def _(queries: torch.Tensor, key_a: torch.Tensor, key_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    N, H, _ = queries.shape
    return queries.new_empty(N, H, k), queries.new_empty(N, H, k, dtype=torch.int64)


def _retrieve_setup(ctx, inputs, output) -> None:
    queries, key_a, key_b, _ = inputs
    ctx.save_for_backward(queries, key_a, key_b, output[1])


def _retrieve_backward(ctx, d_scores: torch.Tensor, _d_indices: torch.Tensor):
    queries, key_a, key_b, indices = ctx.saved_tensors
    N, H, _ = queries.shape
    n_b = key_b.shape[1]
    g = d_scores.float()
    # A chosen expert's score is a[i_a] + b[i_b]: its gradient goes to both sub-scores (summed where shared).
    d_a = g.new_zeros(N, H, key_a.shape[1]).scatter_add_(-1, indices // n_b, g)  # (N, H, N_a)
    d_b = g.new_zeros(N, H, n_b).scatter_add_(-1, indices % n_b, g)  # (N, H, N_b)
    q_a, q_b = queries.float().chunk(2, dim=-1)  # 2 x (N, H, Q/2)
    dq = torch.cat(
        [torch.einsum("nhi,hid->nhd", d_a, key_a.float()), torch.einsum("nhi,hid->nhd", d_b, key_b.float())], dim=-1
    )
    dk_a = torch.einsum("nhi,nhd->hid", d_a, q_a)
    dk_b = torch.einsum("nhi,nhd->hid", d_b, q_b)
    return dq.to(queries.dtype), dk_a.to(key_a.dtype), dk_b.to(key_b.dtype), None


_retrieve_op.register_autograd(_retrieve_backward, setup_context=_retrieve_setup)


def retrieve(
    queries: torch.Tensor, key_a: torch.Tensor, key_b: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, int64 expert indices) (N, Hr, k): `peer_retrieve_reference` for two sub-key sets, in Triton."""
    return _retrieve_op(queries, key_a, key_b, k)


# ---- experts ------------------------------------------------------------------------------------------------


@triton.jit
def _gelu_and_slope(a):
    """Exact (erf) gelu(a) and its derivative."""
    cdf = 0.5 * (1.0 + tl.erf(a * INV_SQRT2))
    return a * cdf, cdf + a * tl.exp(-0.5 * a * a) * INV_SQRT_2PI


@triton.jit
def _expert_rows(
    gates_ptr, indices_ptr, token, r0, S, D, HIDDEN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr
):
    """Rows r0.. of a token's chosen experts (row r = slot * HIDDEN + j): their gates, table offsets and mask."""
    r = r0 + tl.arange(0, BLOCK_R)
    r_mask = r < S * HIDDEN
    slot = r // HIDDEN
    expert = tl.load(indices_ptr + token * S + slot, mask=r_mask, other=0)
    gate = tl.load(gates_ptr + token * S + slot, mask=r_mask, other=0).to(tl.float32)
    d = tl.arange(0, BLOCK_D)
    offsets = (expert * HIDDEN + r % HIDDEN)[:, None] * D + d[None, :]  # (BLOCK_R, BLOCK_D) into (E, HIDDEN * D)
    return r, r_mask, gate, offsets, r_mask[:, None] & (d < D)[None, :]


# The expert kernels load every operand as fp32 (they are elementwise and reductions, no tl.dot), which also
# keeps clear of the interpreter's bf16 arithmetic bug.
@triton.jit
def _experts_fwd_kernel(
    x_ptr, gates_ptr, indices_ptr, down_ptr, up_ptr, out_ptr, S, D,
    HIDDEN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One token: out = sum_r gate_r * gelu(x . U_r) * V_r over its chosen experts' rows."""
    token = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    x = tl.load(x_ptr + token * D + d, mask=d < D, other=0).to(tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for r0 in range(0, S * HIDDEN, BLOCK_R):
        _, _, gate, offsets, mask = _expert_rows(gates_ptr, indices_ptr, token, r0, S, D, HIDDEN, BLOCK_R, BLOCK_D)
        u = tl.load(down_ptr + offsets, mask=mask, other=0).to(tl.float32)  # (BLOCK_R, BLOCK_D)
        v = tl.load(up_ptr + offsets, mask=mask, other=0).to(tl.float32)
        h, _ = _gelu_and_slope(tl.sum(u * x[None, :], axis=1))
        acc += tl.sum((gate * h)[:, None] * v, axis=0)
    tl.store(out_ptr + token * D + d, acc.to(out_ptr.dtype.element_ty), mask=d < D)


@triton.jit
def _experts_bwd_token_kernel(
    d_out_ptr, x_ptr, gates_ptr, indices_ptr, down_ptr, up_ptr, dx_ptr, coef_u_ptr, coef_v_ptr, hb_ptr, S, D,
    HIDDEN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One token: dx, and per row r the coefficients of dU_r (da_r) and dV_r (gate * h_r), and h_r * (d_out . V_r)."""
    token = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    x = tl.load(x_ptr + token * D + d, mask=d < D, other=0).to(tl.float32)
    d_out = tl.load(d_out_ptr + token * D + d, mask=d < D, other=0).to(tl.float32)
    dx = tl.zeros((BLOCK_D,), tl.float32)
    for r0 in range(0, S * HIDDEN, BLOCK_R):
        r, r_mask, gate, offsets, mask = _expert_rows(gates_ptr, indices_ptr, token, r0, S, D, HIDDEN, BLOCK_R, BLOCK_D)
        u = tl.load(down_ptr + offsets, mask=mask, other=0).to(tl.float32)  # (BLOCK_R, BLOCK_D)
        v = tl.load(up_ptr + offsets, mask=mask, other=0).to(tl.float32)
        h, slope = _gelu_and_slope(tl.sum(u * x[None, :], axis=1))
        b = tl.sum(v * d_out[None, :], axis=1)
        da = gate * b * slope
        dx += tl.sum(da[:, None] * u, axis=0)
        rows = token * S * HIDDEN + r
        tl.store(coef_u_ptr + rows, da, mask=r_mask)
        tl.store(coef_v_ptr + rows, gate * h, mask=r_mask)
        tl.store(hb_ptr + rows, h * b, mask=r_mask)
    tl.store(dx_ptr + token * D + d, dx.to(dx_ptr.dtype.element_ty), mask=d < D)


@triton.jit
def _experts_bwd_weights_kernel(
    x_ptr, d_out_ptr, coef_u_ptr, coef_v_ptr, order_ptr, experts_ptr, starts_ptr, counts_ptr, d_down_ptr, d_up_ptr,
    S, D, HIDDEN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One used expert, row j, one block of D: dU = sum coef_u * x, dV = sum coef_v * d_out over its pairs."""
    segment = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    j = tl.program_id(2)
    expert = tl.load(experts_ptr + segment)
    start = tl.load(starts_ptr + segment)
    count = tl.load(counts_ptr + segment)
    acc_u = tl.zeros((BLOCK_D,), tl.float32)
    acc_v = tl.zeros((BLOCK_D,), tl.float32)
    for p0 in range(0, count, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_mask = p < count
        pair = tl.load(order_ptr + start + p, mask=p_mask, other=0)  # token * S + slot
        token = pair // S
        cu = tl.load(coef_u_ptr + pair * HIDDEN + j, mask=p_mask, other=0)
        cv = tl.load(coef_v_ptr + pair * HIDDEN + j, mask=p_mask, other=0)
        mask = p_mask[:, None] & (d < D)[None, :]
        xs = tl.load(x_ptr + token[:, None] * D + d[None, :], mask=mask, other=0).to(tl.float32)  # (BLOCK_P, BLOCK_D)
        gs = tl.load(d_out_ptr + token[:, None] * D + d[None, :], mask=mask, other=0).to(tl.float32)
        acc_u += tl.sum(cu[:, None] * xs, axis=0)
        acc_v += tl.sum(cv[:, None] * gs, axis=0)
    row = (expert * HIDDEN + j) * D
    tl.store(d_down_ptr + row + d, acc_u.to(d_down_ptr.dtype.element_ty), mask=d < D)
    tl.store(d_up_ptr + row + d, acc_v.to(d_up_ptr.dtype.element_ty), mask=d < D)


def _row_blocks(rows: int, D: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_D, num_warps): a token's whole D row, and as many expert rows as fit ~8K elements."""
    block_d = _pow2(D)
    return max(1, min(_pow2(rows), 8192 // block_d)), block_d, 4 if block_d <= 1024 else 8


@torch.library.custom_op("stackwise::peer_experts", mutates_args=())
def _experts_op(
    x: torch.Tensor, gates: torch.Tensor, indices: torch.Tensor, down: torch.Tensor, up: torch.Tensor, hidden: int
) -> torch.Tensor:
    x, gates, indices, down, up = (t.contiguous() for t in (x, gates, indices, down, up))
    N, D = x.shape
    out = torch.empty_like(x)
    if N == 0:
        return out
    block_r, block_d, warps = _row_blocks(gates.shape[1] * hidden, D)
    with launch_device(x):
        _experts_fwd_kernel[(N,)](
            x, gates, indices, down, up, out, gates.shape[1], D,
            HIDDEN=hidden, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps,
        )  # fmt: skip
    return out


@_experts_op.register_fake
def _(
    x: torch.Tensor, gates: torch.Tensor, indices: torch.Tensor, down: torch.Tensor, up: torch.Tensor, hidden: int
) -> torch.Tensor:
    return torch.empty_like(x.contiguous())  # as the real op allocates it


@torch.library.custom_op("stackwise::peer_experts_backward", mutates_args=())
def _experts_backward_op(
    d_out: torch.Tensor,
    x: torch.Tensor,
    gates: torch.Tensor,
    indices: torch.Tensor,
    down: torch.Tensor,
    up: torch.Tensor,
    hidden: int,
    weights: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, d_gates, d_down, d_up); d_down and d_up are empty unless `weights` (the tables want gradients)."""
    d_out, x, gates, indices, down, up = (t.contiguous() for t in (d_out, x, gates, indices, down, up))
    N, D = x.shape
    S = gates.shape[1]
    dx = torch.empty_like(x)
    # Dense, like nn.Embedding's gradient; unused experts keep zeros.
    d_down, d_up = (torch.zeros_like(t) if weights else t.new_empty(0) for t in (down, up))
    coef_u, coef_v, hb = (torch.empty(N, S * hidden, dtype=torch.float32, device=x.device) for _ in range(3))
    if N == 0 or S == 0:
        return dx.zero_(), torch.zeros_like(gates), d_down, d_up
    block_r, block_d, warps = _row_blocks(S * hidden, D)
    with launch_device(x):
        _experts_bwd_token_kernel[(N,)](
            d_out, x, gates, indices, down, up, dx, coef_u, coef_v, hb, S, D,
            HIDDEN=hidden, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps,
        )  # fmt: skip
    d_gates = hb.view(N, S, hidden).sum(-1).to(gates.dtype)  # (N, S)
    if not weights:
        return dx, d_gates, d_down, d_up
    # Sorting the (token, slot) pairs by expert gives each used expert one contiguous segment, so one program
    # per expert sums its gradient rows alone: no atomics, the same result every run.
    sorted_experts, order = torch.sort(indices.flatten(), stable=True)  # (N * S,)
    experts, counts = torch.unique_consecutive(sorted_experts, return_counts=True)  # (M,)
    starts = counts.cumsum(0) - counts
    block_dw = min(256, _pow2(D))
    with launch_device(x):
        _experts_bwd_weights_kernel[(experts.numel(), triton.cdiv(D, block_dw), hidden)](
            x, d_out, coef_u, coef_v, order, experts, starts, counts, d_down, d_up, S, D,
            HIDDEN=hidden, BLOCK_P=16, BLOCK_D=block_dw,
        )  # fmt: skip
    return dx, d_gates, d_down, d_up


@_experts_backward_op.register_fake
def _(
    d_out: torch.Tensor,
    x: torch.Tensor,
    gates: torch.Tensor,
    indices: torch.Tensor,
    down: torch.Tensor,
    up: torch.Tensor,
    hidden: int,
    weights: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Contiguous, as the real op allocates them from its contiguous inputs.
    d_down, d_up = (torch.empty_like(t.contiguous()) if weights else t.new_empty(0) for t in (down, up))
    return torch.empty_like(x.contiguous()), torch.empty_like(gates.contiguous()), d_down, d_up


def _experts_setup(ctx, inputs, output) -> None:
    x, gates, indices, down, up, hidden = inputs
    ctx.save_for_backward(x, gates, indices, down, up)
    ctx.hidden = hidden


def _experts_backward(ctx, d_out: torch.Tensor):
    x, gates, indices, down, up = ctx.saved_tensors
    weights = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
    dx, d_gates, d_down, d_up = _experts_backward_op(d_out, x, gates, indices, down, up, ctx.hidden, weights)
    if not weights:
        return dx, d_gates, None, None, None, None
    return dx, d_gates, None, d_down, d_up, None


_experts_op.register_autograd(_experts_backward, setup_context=_experts_setup)


def experts(
    x: torch.Tensor, gates: torch.Tensor, indices: torch.Tensor, down: torch.Tensor, up: torch.Tensor, hidden: int
) -> torch.Tensor:
    """`peer_experts_reference` in Triton: (N, D), reading experts from the (E, hidden * D) tables."""
    return _experts_op(x, gates, indices, down, up, hidden)
