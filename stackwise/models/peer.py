"""PEER: parameter-efficient expert retrieval (He, 2024, "Mixture of A Million Experts"), a layer in place of the MLP.

Each of `num_heads` retrieval heads projects the token to a query, splits it into one part per sub-key
set, scores each part against its (trainable) sub-keys, keeps the top k of each, combines them into
candidate experts of the product space (scores add, indices multiply out), and keeps the final top k.
The chosen experts are single neurons (or `expert_hidden_size`-wide MLPs): out += softmax(score) x
v_e act(u_e . x). Expert usage is counted so that the trainer can log it and flag "hot" experts.

The math lives in `stackwise.kernels.peer`: the PyTorch reference, or the Triton kernels when `impl` is
"triton" (set from outside by `Transformer.use_kernels`), which read the chosen experts from the tables
instead of gathering per-token copies of their weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..kernels.peer import peer_experts, peer_retrieve, product_topk
from ..kernels.peer import triton_limit as peer_triton_limit

__all__ = ["PEER", "product_topk"]


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
        self.impl = "torch"  # or "triton": chosen from outside, by `Transformer.use_kernels`

    def triton_limit(self) -> str | None:
        return peer_triton_limit(self.product_key_dim, self.k, self.d_model)

    def retrieve(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, expert indices), each (B, T, heads, k)."""
        B, T, _ = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.query_dim)  # (B, T, Hr, Q)
        if self.query_norm is not None:
            q = self.query_norm(q)
        q = q.reshape(B * T, self.num_heads, self.query_dim)  # (N, Hr, Q)
        scores, experts = peer_retrieve(q, list(self.keys), self.k, self.impl)  # (N, Hr, k)
        return scores.view(B, T, self.num_heads, self.k), experts.view(B, T, self.num_heads, self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        scores, experts = self.retrieve(x)  # (B, T, Hr, k)
        if self.track_usage and self.training:
            with torch.no_grad():
                self.usage += torch.bincount(experts.flatten(), minlength=self.usage.numel())
        gates = scores.softmax(dim=-1)  # (B, T, Hr, k)
        slots = self.num_heads * self.k
        out = peer_experts(
            x.reshape(B * T, D),
            gates.view(B * T, slots),
            experts.view(B * T, slots),
            self.down.weight,
            self.up.weight,
            self.hidden,
            self.impl,
        )  # (B * T, D)
        return out.view(B, T, D)

    def hot_experts(self, threshold: float) -> torch.Tensor:
        """Indices of experts used more than `threshold` times the mean usage."""
        mean = self.usage.float().mean()
        return torch.nonzero(self.usage.float() > threshold * mean.clamp(min=1e-12)).flatten()
