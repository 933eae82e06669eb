"""Transformer building blocks: norms, rotary embeddings, attention, MLPs. Plain arguments, no config objects.

Shapes: B batch, T sequence, D d_model, H query heads, Hkv key/value heads, Dh head dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.attention import attention as attention_op
from ..kernels.attention import triton_limit as attention_triton_limit


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (as Llama does) and cast back."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        wide = x.to(torch.promote_types(dtype, torch.float32))  # at least float32; float64 stays float64
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * wide.to(dtype)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """`rmsnorm` or `layernorm` (with bias, as GPT-2)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; expected rmsnorm or layernorm")


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embeddings over `dim` dimensions (half-split layout, as Llama).

    The tables are float64 and deliberately not buffers: `model.to(torch.bfloat16)` would round them, and
    bf16 angles are wrong by whole degrees at long positions. They are cast to the input's dtype at use.
    """

    def __init__(self, dim: int, max_seq_len: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"RoPE needs an even dimension, got {dim}")
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)  # (T, dim/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, dim)
        self.max_seq_len = max_seq_len
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {
            torch.device("cpu"): (angles.cos(), angles.sin())
        }

    def forward(
        self, seq_len: int, offset: int = 0, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if offset + seq_len > self.max_seq_len:
            raise ValueError(f"sequence of {offset + seq_len} tokens is longer than max_seq_len {self.max_seq_len}")
        device = torch.device(device or "cpu")
        if device not in self._tables:
            cos, sin = self._tables[torch.device("cpu")]
            self._tables[device] = (cos.to(device), sin.to(device))
        cos, sin = self._tables[device]
        return cos[offset : offset + seq_len], sin[offset : offset + seq_len]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (B, H, T, Dr) by position: each pair (i, i + Dr/2) turns by its angle."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, Dr), broadcast over B and H
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    """Multi-head / grouped-query attention (n_kv_heads < n_heads shares each K/V head among a group)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        causal: bool = True,
        bias: bool = False,
        dropout: float = 0.0,
        rope: RotaryEmbedding | None = None,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        if n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        self.head_dim = head_dim or d_model // n_heads
        self.causal = causal
        self.dropout = dropout
        self.rope = rope
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        self.impl = "torch"  # or "triton": chosen from outside, by `Transformer.use_kernels`

    def triton_limit(self) -> str | None:
        return attention_triton_limit(self.head_dim, self.head_dim, self.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        if self.rope is not None:
            cos, sin = self.rope(T, device=x.device)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # K/V heads are shared by their query group, not repeated in memory.
        out = attention_op(
            q, k, v, causal=self.causal, impl=self.impl, dropout=self.dropout if self.training else 0.0
        )  # (B, H, T, Dh)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """`gelu`: GPT-2's fc -> tanh-GELU -> proj. `silu` (SwiGLU) and `relu2`: gated, down(act(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "silu", *, bias: bool = False):
        super().__init__()
        if activation not in ("gelu", "silu", "relu2"):
            raise ValueError(f"unknown activation {activation!r}; expected gelu, silu or relu2")
        self.activation = activation
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias) if activation != "gelu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))
        gate = self.gate_proj(x)
        act = F.silu(gate) if self.activation == "silu" else F.relu(gate).square()
        return self.down_proj(act * self.up_proj(x))


class LatentAttention(nn.Module):
    """DeepSeek-style multi-head latent attention (MLA).

    Queries come through an optional low-rank bottleneck (q_lora_rank); keys and values are rebuilt from a
    shared compressed latent (kv_lora_rank, the KV cache in inference). RoPE is decoupled: each query head
    has qk_rope_head_dim rotated dimensions, and one rotated key part is shared by all heads. The latent
    norms use eps 1e-6, as DeepSeek-V3 does.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        q_lora_rank: int | None,
        kv_lora_rank: int,
        qk_rope_head_dim: int,
        qk_nope_head_dim: int,
        v_head_dim: int,
        rope: RotaryEmbedding,
        causal: bool = True,
        bias: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_heads, self.causal, self.dropout, self.rope = n_heads, causal, dropout, rope
        self.nope, self.rot, self.v_dim, self.kv_rank = qk_nope_head_dim, qk_rope_head_dim, v_head_dim, kv_lora_rank
        qk = qk_nope_head_dim + qk_rope_head_dim
        if q_lora_rank:
            self.q_a_proj = nn.Linear(d_model, q_lora_rank, bias=bias)
            self.q_norm = RMSNorm(q_lora_rank, 1e-6)
            self.q_b_proj = nn.Linear(q_lora_rank, n_heads * qk, bias=False)
            self.q_proj = None
        else:
            self.q_a_proj = self.q_norm = self.q_b_proj = None
            self.q_proj = nn.Linear(d_model, n_heads * qk, bias=False)
        self.kv_a_proj = nn.Linear(d_model, kv_lora_rank + qk_rope_head_dim, bias=bias)
        self.kv_norm = RMSNorm(kv_lora_rank, 1e-6)
        self.kv_b_proj = nn.Linear(kv_lora_rank, n_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.o_proj = nn.Linear(n_heads * v_head_dim, d_model, bias=bias)
        self.impl = "torch"  # or "triton": chosen from outside, by `Transformer.use_kernels`

    def triton_limit(self) -> str | None:
        return attention_triton_limit(self.nope + self.rot, self.v_dim, self.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_heads
        q = self.q_proj(x) if self.q_proj is not None else self.q_b_proj(self.q_norm(self.q_a_proj(x)))
        q = q.view(B, T, H, self.nope + self.rot).transpose(1, 2)  # (B, H, T, Dnope + Drope)
        q_nope, q_rot = q.split([self.nope, self.rot], dim=-1)
        latent, k_rot = self.kv_a_proj(x).split([self.kv_rank, self.rot], dim=-1)  # (B, T, R), (B, T, Drope)
        kv = self.kv_b_proj(self.kv_norm(latent)).view(B, T, H, self.nope + self.v_dim).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)  # (B, H, T, Dnope), (B, H, T, Dv)
        cos, sin = self.rope(T, device=x.device)
        q_rot = apply_rope(q_rot, cos, sin)
        k_rot = apply_rope(k_rot.unsqueeze(1), cos, sin).expand(B, H, T, self.rot)  # one rotated key, all heads
        q = torch.cat([q_nope, q_rot], dim=-1)
        k = torch.cat([k_nope, k_rot], dim=-1)
        out = attention_op(
            q, k, v, causal=self.causal, impl=self.impl, dropout=self.dropout if self.training else 0.0
        )  # (B, H, T, Dv); scale 1/sqrt(Dnope + Drope)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * self.v_dim))


class KernelAttention(nn.Module):
    """Linear-time attention: softmax(q k^T) replaced by phi(q) phi(k)^T for a positive feature map phi.

    out_t = sum_s phi(q_t).phi(k_s) v_s / sum_s phi(q_t).phi(k_s), over s <= t (causal, by prefix sums) or all s.
    Feature maps: `elu` (elu + 1), `relu`, or `gaussian` (positive random features of the softmax kernel,
    Performer-style, `feature_dim` fixed random directions). With RoPE, the numerator uses rotated features
    and the denominator unrotated ones (RoFormer, eq. 19), which keeps the denominator positive.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        feature_map: str = "elu",
        feature_dim: int | None = None,
        causal: bool = True,
        bias: bool = False,
        rope: RotaryEmbedding | None = None,
        eps: float = 1e-6,
    ):
        super().__init__()
        if feature_map not in ("elu", "relu", "gaussian"):
            raise ValueError(f"unknown feature map {feature_map!r}; expected elu, relu or gaussian")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads or n_heads
        self.head_dim = head_dim or d_model // n_heads
        self.feature_map, self.causal, self.rope, self.eps = feature_map, causal, rope, eps
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        if feature_map == "gaussian":
            m = feature_dim or self.head_dim
            if rope is not None and m % 2:
                raise ValueError(f"RoPE on gaussian features needs an even feature_dim, got {m}")
            generator = torch.Generator().manual_seed(0)
            self.register_buffer("projection", torch.randn(self.head_dim, m, generator=generator))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x) for x (..., Dh): positive features (..., F)."""
        if self.feature_map == "elu":
            return F.elu(x) + 1
        if self.feature_map == "relu":
            return F.relu(x)
        x = x / self.head_dim**0.25  # the softmax kernel exp(q.k / sqrt(Dh)), split between q and k
        proj = x @ self.projection.to(x.dtype)  # (..., m)
        return torch.exp(proj - x.pow(2).sum(-1, keepdim=True) / 2) / self.projection.shape[1] ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        group = self.n_heads // self.n_kv_heads
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, T, Dh)
        fq, fk = self.features(q), self.features(k)  # (B, H, T, F)
        nq, nk = fq, fk
        if self.rope is not None:
            cos, sin = self.rope(T, device=x.device)
            nq, nk = apply_rope(fq, cos, sin), apply_rope(fk, cos, sin)
        if self.causal:
            kv = torch.cumsum(nk.unsqueeze(-1) * v.unsqueeze(-2), dim=2)  # (B, H, T, F, Dh): prefix sums
            num = (nq.unsqueeze(-2) @ kv).squeeze(-2)  # (B, H, T, Dh)
            den = (fq * torch.cumsum(fk, dim=2)).sum(-1, keepdim=True)  # (B, H, T, 1)
        else:
            num = nq @ (nk.transpose(-1, -2) @ v)  # (B, H, T, Dh)
            den = (fq * fk.sum(dim=2, keepdim=True)).sum(-1, keepdim=True)
        out = num / (den + self.eps)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
