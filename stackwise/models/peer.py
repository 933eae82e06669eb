"""PEER: parameter-efficient expert retrieval (He, 2024, "Mixture of A Million Experts"), the PyTorch reference.

Each of `num_heads` retrieval heads projects the token to a query, splits it into one part per sub-key
set, scores each part against its (trainable) sub-keys, keeps the top k of each, combines them into
candidate experts of the product space (scores add, indices multiply out), and keeps the final top k.
The chosen experts are single neurons (or `expert_hidden_size`-wide MLPs): out += softmax(score) x
v_e act(u_e . x). Expert usage is counted so that the trainer can log it and flag "hot" experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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


class PEER(nn.Module):
    """A PEER layer: (B, T, D) -> (B, T, D); replaces a dense MLP."""

    def __init__(
        self,
        d_model: int,
        *,
        num_experts: int,
        num_experts_per_tok: int,
        num_heads: int,
        product_key_dim: tuple[int, ...],
        query_dim: int,
        expert_hidden_size: int = 1,
        query_norm: bool = True,
        track_usage: bool = False,
    ):
        super().__init__()
        if math.prod(product_key_dim) != num_experts:
            raise ValueError(f"num_experts ({num_experts}) must equal the product of product_key_dim {product_key_dim}")
        if query_dim % len(product_key_dim):
            raise ValueError(f"query_dim ({query_dim}) must divide into {len(product_key_dim)} sub-queries")
        self.d_model, self.k, self.num_heads = d_model, num_experts_per_tok, num_heads
        self.product_key_dim, self.query_dim, self.hidden = tuple(product_key_dim), query_dim, expert_hidden_size
        sub_dim = query_dim // len(product_key_dim)
        self.query = nn.Linear(d_model, num_heads * query_dim, bias=False)
        self.query_norm = nn.LayerNorm(query_dim) if query_norm else None
        # Trainable sub-keys, one set per head and factor: (heads, N_i, sub_dim).
        self.keys = nn.ParameterList(
            nn.Parameter(torch.randn(num_heads, n, sub_dim) / math.sqrt(sub_dim)) for n in product_key_dim
        )
        self.down = nn.Embedding(num_experts, d_model * expert_hidden_size)  # u_e
        self.up = nn.Embedding(num_experts, expert_hidden_size * d_model)  # v_e
        self.track_usage = track_usage
        self.register_buffer("usage", torch.zeros(num_experts, dtype=torch.long), persistent=False)

    def retrieve(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, expert indices), each (B, T, heads, k)."""
        B, T, _ = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.query_dim)  # (B, T, Hr, Q)
        if self.query_norm is not None:
            q = self.query_norm(q)
        parts = q.chunk(len(self.product_key_dim), dim=-1)  # n x (B, T, Hr, Q/n)
        scores = [torch.einsum("bthd,hnd->bthn", part, keys) for part, keys in zip(parts, self.keys, strict=True)]
        return product_topk(scores, self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        scores, experts = self.retrieve(x)  # (B, T, Hr, k)
        if self.track_usage and self.training:
            with torch.no_grad():
                self.usage += torch.bincount(experts.flatten(), minlength=self.usage.numel())
        gates = scores.softmax(dim=-1)  # (B, T, Hr, k)
        down = self.down(experts).view(B, T, self.num_heads, self.k, self.hidden, D)  # per-token copies: reference only
        up = self.up(experts).view(B, T, self.num_heads, self.k, self.hidden, D)
        hidden = F.gelu(torch.einsum("btd,bthkjd->bthkj", x, down))  # (B, T, Hr, k, hidden)
        return torch.einsum("bthk,bthkj,bthkjd->btd", gates, hidden, up)

    def hot_experts(self, threshold: float) -> torch.Tensor:
        """Indices of experts used more than `threshold` times the mean usage."""
        mean = self.usage.float().mean()
        return torch.nonzero(self.usage.float() > threshold * mean.clamp(min=1e-12)).flatten()
