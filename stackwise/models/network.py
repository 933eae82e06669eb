"""The transformer: token embeddings, a stack of pre-norm layers, a final norm and an output head.

`transformer(...)` builds one from plain arguments; the arguments are kept on the model (`model.arch`) so
that it can be exported (`to_hf`) and checkpoints can be checked against the architecture they came from.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..kernels.dispatch import select
from .layers import MLP, Attention, KernelAttention, LatentAttention, RotaryEmbedding, make_norm
from .peer import PEER


class TransformerLayer(nn.Module):
    """x + attn(norm1(x)), then + mlp(norm2(.)): one transformer layer (not a "block": see ARCHITECTURE.md)."""

    def __init__(self, attn: nn.Module, mlp: nn.Module, norm1: nn.Module, norm2: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp
        self.dropout = nn.Dropout(dropout)
        self.gradient_checkpointing = False
        # Autocast dtype of this layer alone (a progressive stack trained in half precision); None: the caller's.
        self.compute_dtype: torch.dtype | None = None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x)))
        return x + self.dropout(self.mlp(self.norm2(x)))

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        # Also in eval mode when a gradient passes through (a frozen trunk below trained embeddings).
        if self.gradient_checkpointing and torch.is_grad_enabled() and (self.training or x.requires_grad):
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute_dtype is None:
            return self._run(x)
        with torch.autocast(x.device.type, dtype=self.compute_dtype):
            return self._run(x).to(x.dtype)


class Transformer(nn.Module):
    """input_ids (B, T) -> logits (B, T, vocab)."""

    def __init__(
        self,
        embed: nn.Embedding,
        layers: list[nn.Module],
        norm: nn.Module,
        head: nn.Linear,
        *,
        pos_embed: nn.Embedding | None = None,
        dropout: float = 0.0,
        arch: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.embed = embed
        self.pos_embed = pos_embed
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.head = head
        self.arch = dict(arch or {})

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input of the first layer (B, T, D): token (and position) embeddings, after dropout."""
        x = self.embed(input_ids)  # (B, T, D)
        if self.pos_embed is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = x + self.pos_embed(positions)
        return self.dropout(x)

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states (B, T, D)."""
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(input_ids))

    def use_kernels(
        self, attention: str = "auto", peer: str = "auto", *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, str]:
        """Choose each op's implementation (torch or triton) for this device and compute dtype, once.

        `attention` / `peer`: auto, torch or triton (the config's `attention_kernel` / `peer_kernel`). Raises
        `KernelUnavailableError` when triton is asked for where it cannot run. Returns {op: implementation}.
        """
        chosen: dict[str, str] = {}
        for module in self.modules():
            if isinstance(module, (Attention, LatentAttention)):
                op, choice, setting = "attention", attention, "model.attention_kernel"
            elif isinstance(module, PEER):
                op, choice, setting = "peer", peer, "model.peer_kernel"
            else:
                continue
            module.impl = select(op, choice, device, dtype, limit=module.triton_limit(), setting=setting)
            chosen[op] = module.impl
        return chosen

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each layer's activations in the backward pass instead of storing them."""
        for layer in self.layers:
            layer.gradient_checkpointing = enabled


def transformer(
    *,
    vocab_size: int,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    head_dim: int | None = None,
    d_ff: int | None = None,
    activation: str = "silu",
    norm: str = "rmsnorm",
    norm_eps: float = 1e-5,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    max_seq_len: int = 2048,
    use_rope: bool = True,
    rope_theta: float = 10000.0,
    tie_embeddings: bool = True,
    bias: bool = False,
    causal: bool = True,
    initializer_range: float = 0.02,
    attention: str = "standard",
    q_lora_rank: int | None = None,
    kv_lora_rank: int | None = None,
    qk_rope_head_dim: int | None = None,
    qk_nope_head_dim: int | None = None,
    v_head_dim: int | None = None,
    kernel_feature_map: str = "elu",
    kernel_dim: int | None = None,
    peer: dict[str, Any] | None = None,
    peer_start_layer: int = 0,
) -> Transformer:
    """A decoder (causal) or bidirectional transformer with MHA/GQA, MLA (`attention="mla"` with the
    q_lora_rank ... v_head_dim arguments) or linear-time kernel attention (`attention="kernel"`), RoPE or
    learned positions, and pre-norm. With `peer` (PEER keyword arguments), layers from `peer_start_layer` on
    use a PEER expert layer instead of the MLP."""
    arch = {k: v for k, v in locals().items()}
    head_dim = head_dim or d_model // n_heads
    d_ff = d_ff or 4 * d_model
    if attention == "mla":
        if not use_rope:
            raise ValueError("MLA's decoupled RoPE is part of the attention: use_rope must be true")
        rope = RotaryEmbedding(qk_rope_head_dim, max_seq_len, rope_theta)

        def make_attention() -> nn.Module:
            return LatentAttention(
                d_model,
                n_heads,
                q_lora_rank=q_lora_rank,
                kv_lora_rank=kv_lora_rank,
                qk_rope_head_dim=qk_rope_head_dim,
                qk_nope_head_dim=qk_nope_head_dim,
                v_head_dim=v_head_dim,
                rope=rope,
                causal=causal,
                bias=bias,
                dropout=attention_dropout,
            )
    elif attention == "standard":
        rope = RotaryEmbedding(head_dim, max_seq_len, rope_theta) if use_rope else None

        def make_attention() -> nn.Module:
            return Attention(
                d_model, n_heads, n_kv_heads, head_dim, causal=causal, bias=bias, dropout=attention_dropout, rope=rope
            )
    elif attention == "kernel":
        features = kernel_dim or head_dim if kernel_feature_map == "gaussian" else head_dim
        rope = RotaryEmbedding(features, max_seq_len, rope_theta) if use_rope else None

        def make_attention() -> nn.Module:
            return KernelAttention(
                d_model,
                n_heads,
                n_kv_heads,
                head_dim,
                feature_map=kernel_feature_map,
                feature_dim=kernel_dim,
                causal=causal,
                bias=bias,
                rope=rope,
            )
    else:
        raise ValueError(f"unknown attention {attention!r}; expected standard, mla or kernel")
    layers = [
        TransformerLayer(
            make_attention(),
            PEER(d_model, **peer)
            if peer is not None and i >= peer_start_layer
            else MLP(d_model, d_ff, activation, bias=bias),
            make_norm(norm, d_model, norm_eps),
            make_norm(norm, d_model, norm_eps),
            dropout,
        )
        for i in range(n_layers)
    ]
    embed = nn.Embedding(vocab_size, d_model)
    head = nn.Linear(d_model, vocab_size, bias=False)
    model = Transformer(
        embed,
        layers,
        make_norm(norm, d_model, norm_eps),
        head,
        pos_embed=None if use_rope else nn.Embedding(max_seq_len, d_model),
        dropout=dropout,
        arch=arch,
    )
    init_weights(model, initializer_range)
    if tie_embeddings:
        model.head.weight = model.embed.weight
    return model


def init_weights(model: nn.Module, std: float) -> None:
    """Normal(0, std) for linear and embedding weights, zero biases, unit norms; residual projections
    (attention output, MLP down) scaled by 1/sqrt(2 * n_layers), as GPT-2 does, so depth does not grow the stream."""
    n_layers = sum(isinstance(m, TransformerLayer) for m in model.modules()) or 1
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            scale = 1 / math.sqrt(2 * n_layers) if name.endswith(("o_proj", "down_proj")) else 1.0
            nn.init.normal_(module.weight, mean=0.0, std=std * scale)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
