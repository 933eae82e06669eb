"""PEER's two ops, expert retrieval and the expert mixture: the PyTorch references (the specification) and dispatch.

`peer_retrieve` scores each head's query against the product keys and keeps the top k experts;
`peer_experts` runs the chosen single-neuron (or `hidden`-wide) experts and mixes them with the gates.
The references gather per-token copies of the expert weights; the Triton path (`peer_triton`, imported
only when asked for, because `triton.jit` reads TRITON_INTERPRET at import) reads them from the tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The Triton kernels keep the k x k product candidates of a block of tokens in registers, and a token's
# whole d_model row per expert: beyond these, the layer runs the reference.
MAX_TRITON_K = 32
MAX_TRITON_D = 8192


def product_topk(scores: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of the Cartesian product of sub-key scores. scores[i]: (..., N_i) -> (values, flat indices) (..., k).

    The flat index of (i_0, ..., i_{n-1}) is row-major over (N_0, ..., N_{n-1}). Keeping the top k of each
    factor is exact: any top-k product element is built from top-k elements of every factor.
    """
    values, indices = scores[0].topk(min(k, scores[0].shape[-1]), dim=-1)  # (..., k)
    for sub in scores[1:]:
        sub_values, sub_indices = sub.topk(min(k, sub.shape[-1]), dim=-1)  # (..., k)
        combined = values.unsqueeze(-1) + sub_values.unsqueeze(-2)  # (..., k, k)
        flat = indices.unsqueeze(-1) * sub.shape[-1] + sub_indices.unsqueeze(-2)  # (..., k, k)
        candidates = combined.flatten(-2)  # (..., k * k)
        values, best = candidates.topk(min(k, candidates.shape[-1]), dim=-1)
        indices = flat.flatten(-2).gather(-1, best)
    return values, indices


def peer_retrieve_reference(
    queries: torch.Tensor, keys: Sequence[torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, expert indices), each (N, Hr, k). queries (N, Hr, Q), normalised; keys[i] (Hr, N_i, Q / len(keys))."""
    parts = queries.chunk(len(keys), dim=-1)  # n x (N, Hr, Q/n)
    scores = [torch.einsum("nhd,hid->nhi", part, sub) for part, sub in zip(parts, keys, strict=True)]  # (N, Hr, N_i)
    return product_topk(scores, k)


def peer_experts_reference(
    x: torch.Tensor, gates: torch.Tensor, indices: torch.Tensor, down: torch.Tensor, up: torch.Tensor, hidden: int
) -> torch.Tensor:
    """(N, D) = sum_s gates[n, s] * sum_j gelu(x_n . U[e, j]) * V[e, j], e = indices[n, s].

    x (N, D); gates, indices (N, S); down, up (E, hidden * D), read as U[e] = down[e].view(hidden, D).
    """
    N, D = x.shape
    S = indices.shape[1]
    u = down[indices].view(N, S, hidden, D)  # per-token copies: the reference only
    v = up[indices].view(N, S, hidden, D)
    h = F.gelu(torch.einsum("nd,nsjd->nsj", x, u))  # (N, S, hidden)
    return torch.einsum("ns,nsj,nsjd->nd", gates, h, v)


def triton_limit(product_key_dim: Sequence[int], k: int, d_model: int) -> str | None:
    """Why the Triton kernels cannot run a PEER layer of this shape (None: they can)."""
    if len(product_key_dim) != 2:
        return f"the PEER kernels take two sub-key sets (product_key_dim of length 2), not {len(product_key_dim)}"
    if k > MAX_TRITON_K:
        return f"the PEER retrieval kernel keeps at most {MAX_TRITON_K} experts per head, not {k}"
    if d_model > MAX_TRITON_D:
        return f"the PEER expert kernels take d_model up to {MAX_TRITON_D}, not {d_model}"
    return None


def peer_retrieve(
    queries: torch.Tensor, keys: Sequence[torch.Tensor], k: int, impl: str = "torch"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`peer_retrieve_reference` (impl "torch") or the Triton kernel (impl "triton", two sub-key sets)."""
    if impl == "torch":
        return peer_retrieve_reference(queries, keys, k)
    reason = triton_limit([key.shape[1] for key in keys], k, 0)
    if reason is not None:
        raise ValueError(reason)
    from . import peer_triton

    return peer_triton.retrieve(queries, keys[0], keys[1], k)


def peer_experts(
    x: torch.Tensor,
    gates: torch.Tensor,
    indices: torch.Tensor,
    down: torch.Tensor,
    up: torch.Tensor,
    hidden: int,
    impl: str = "torch",
) -> torch.Tensor:
    """`peer_experts_reference` (impl "torch") or the Triton kernels (impl "triton")."""
    if impl == "torch":
        return peer_experts_reference(x, gates, indices, down, up, hidden)
    if x.shape[1] > MAX_TRITON_D:
        raise ValueError(triton_limit((1, 1), 1, x.shape[1]))
    from . import peer_triton

    return peer_triton.experts(x, gates, indices, down, up, hidden)
