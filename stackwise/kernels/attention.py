"""Softmax attention: the plain-PyTorch reference (the specification) and the entry point that dispatches.

Shapes: q (B, H, Tq, Dqk); k (B, Hkv, Tk, Dqk); v (B, Hkv, Tk, Dv) -> (B, H, Tq, Dv). H is a multiple of Hkv;
query head h reads key/value head h // (H / Hkv) (grouped-query attention, SDPA's `enable_gqa` order).
Causal masking is top-left aligned, as SDPA's `is_causal`: query i sees keys j <= i. Dv may differ from Dqk
(MLA). `scale` defaults to 1 / sqrt(Dqk).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None
) -> torch.Tensor:
    """softmax(q k^T * scale [+ causal mask]) v, written out; K/V heads are broadcast, not copied."""
    B, H, Tq, Dqk = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(Dqk) if scale is None else scale
    grouped = q.view(B, Hkv, H // Hkv, Tq, Dqk)  # (B, Hkv, G, Tq, Dqk)
    scores = grouped @ k.unsqueeze(2).transpose(-1, -2) * scale  # (B, Hkv, G, Tq, Tk)
    if causal:
        keep = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    out = scores.softmax(dim=-1) @ v.unsqueeze(2)  # (B, Hkv, G, Tq, Dv)
    return out.view(B, H, Tq, v.shape[-1])


def triton_limit(head_dim: int, v_head_dim: int, dropout: float) -> str | None:
    """Why the Triton kernel cannot run an attention layer of this shape (None: it can)."""
    if dropout > 0:
        return "the Triton attention kernel has no attention dropout (set model.attention_dropout: 0)"
    if max(head_dim, v_head_dim) > 256:
        return f"the Triton attention kernel takes head dimensions up to 256, not {max(head_dim, v_head_dim)}"
    return None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    impl: str = "torch",
    dropout: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention by `impl`: `torch` is PyTorch's SDPA (flash / memory-efficient / math backends), `triton` ours."""
    if impl == "triton":
        if dropout > 0:  # `Transformer.use_kernels` never picks triton with dropout; a hand-set impl must not drop it
            raise ValueError("the Triton attention kernel has no attention dropout; use impl='torch'")
        from .attention_triton import flash_attention  # lazy: Triton is optional and reads TRITON_INTERPRET

        return flash_attention(q, k, v, causal=causal, scale=scale)
    return F.scaled_dot_product_attention(
        q, k, v, is_causal=causal, dropout_p=dropout, scale=scale, enable_gqa=k.shape[1] != q.shape[1]
    )
