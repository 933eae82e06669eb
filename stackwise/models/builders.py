"""`build_model`: the one place that translates a `ModelConfig` into module arguments.

Every model setting is built. `pretrained_name` does not change the architecture: loading its weights is
the trainer's job (issue #4).
"""

from __future__ import annotations

from ..config.model import ModelConfig
from ..config.tokenizers import pretrained_width
from .bitnet import insert_subln, to_bitnet
from .network import Transformer, transformer
from .pretrained import load_pretrained_embeddings, use_pretrained_width

GPT2_VOCAB = 50257


class UnsupportedModelError(ValueError):
    """The config asks for a model feature stackwise does not build yet."""


def model_arguments(cfg: ModelConfig, vocab_size: int | None = None) -> dict:
    """The keyword arguments of `transformer(...)` for this config (vocab_size: the tokenizer's when null)."""
    return dict(
        vocab_size=cfg.vocab_size or vocab_size or GPT2_VOCAB,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.kv_heads,
        head_dim=cfg.resolved_head_dim,
        d_ff=cfg.resolved_d_ff,
        activation=cfg.ffn_activation,
        norm=cfg.norm_type,
        norm_eps=cfg.norm_eps,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        max_seq_len=cfg.max_seq_len,
        use_rope=cfg.use_rope,
        rope_theta=cfg.rope_theta,
        tie_embeddings=cfg.tie_embeddings,
        bias=cfg.bias,
        causal=cfg.attention_mode == "causal",
        initializer_range=cfg.initializer_range,
        **_attention_arguments(cfg),
        **_peer_arguments(cfg),
    )


def _peer_arguments(cfg: ModelConfig) -> dict:
    if not cfg.use_peer:
        return {}
    p = cfg.peer
    return dict(
        peer=dict(
            num_experts=p.num_experts,
            num_experts_per_tok=p.num_experts_per_tok,
            num_heads=p.num_heads,
            product_key_dim=p.product_key_dim,
            query_dim=p.query_dim,
            expert_hidden_size=p.expert_hidden_size,
            query_norm=p.batch_norm_query,
            track_usage=p.log_expert_usage,
        ),
        peer_start_layer=cfg.peer_start_layer,
    )


def _attention_arguments(cfg: ModelConfig) -> dict:
    if cfg.attention_type == "kernel":
        return dict(attention="kernel", kernel_feature_map=cfg.kernel_type, kernel_dim=cfg.kernel_dim)
    if cfg.attention_type != "mla":
        return {}
    if not cfg.use_rope:
        raise UnsupportedModelError("model.use_rope: false with attention_type mla: MLA's decoupled RoPE is part of it")
    return dict(
        attention="mla",
        q_lora_rank=cfg.mla.q_lora_rank,
        kv_lora_rank=cfg.mla.kv_lora_rank,
        qk_rope_head_dim=cfg.mla.qk_rope_head_dim,
        qk_nope_head_dim=cfg.mla.qk_nope_head_dim,
        v_head_dim=cfg.mla.v_head_dim,
    )


def build_model(cfg: ModelConfig, vocab_size: int | None = None, *, load_weights: bool = True) -> Transformer:
    """The model a `ModelConfig` describes, freshly initialised (BitNet and SubLN applied when configured).

    With `tokenizer_embedding`, the token embeddings take the pretrained width (plus an adapter) and, when
    `load_weights`, the pretrained values; `load_weights=False` builds the architecture only.
    """
    model = transformer(**model_arguments(cfg, vocab_size))
    te = cfg.tokenizer_embedding
    if te is not None:
        width = pretrained_width(te.family, te.path)
        if width is None:
            raise UnsupportedModelError(
                f"model.tokenizer_embedding: cannot read the width of `{te.path}` (config.json)"
            )
        use_pretrained_width(model, width, cfg.d_model, te.adapter_hidden_dim)
        if load_weights:
            load_pretrained_embeddings(model, te)
        elif te.freeze_embeddings:
            model.embed.weight.requires_grad_(False)
    if cfg.subln.enabled:
        insert_subln(model, cfg.subln.eps, cfg.subln.elementwise_affine)
    if cfg.quantization is not None:
        to_bitnet(model, cfg.quantization.activation_bits, cfg.quantization.per_token_activation)
    return model
