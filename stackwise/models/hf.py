"""Hugging Face interchange: `from_hf` copies a `transformers` GPT-2, Llama or DeepSeek-V3 (MLA, dense MLPs)
model into a stackwise model; `to_hf` writes a stackwise model of those architectures as a `save_pretrained`
directory.

transformers is imported here only, when these functions are called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .network import Transformer, transformer


class UnsupportedArchitectureError(ValueError):
    """The model cannot be converted: an architecture or option stackwise does not map."""


def from_hf(hf_model: Any) -> Transformer:
    """A stackwise model with the architecture and weights of a `transformers` causal LM (GPT-2, Llama)."""
    kind = hf_model.config.model_type
    if kind == "gpt2":
        return _from_gpt2(hf_model)
    if kind == "llama":
        return _from_llama(hf_model)
    if kind == "deepseek_v3":
        return _from_deepseek_v3(hf_model)
    raise UnsupportedArchitectureError(f"from_hf supports gpt2, llama and deepseek_v3 models, not {kind!r}")


def to_hf(model: Transformer, path: str | Path) -> Path:
    """Write `model` as a `transformers` checkpoint directory (config + safetensors weights); returns the path."""
    arch = model.arch
    if arch.get("bitnet") or arch.get("subln") or arch.get("peer") or arch.get("attention") == "kernel":
        raise UnsupportedArchitectureError(
            "BitNet / SubLN / PEER / kernel-attention models have no transformers architecture to export to"
        )
    if arch.get("norm") == "layernorm" and not arch.get("use_rope"):
        hf = _to_gpt2(model)
    elif arch.get("attention") == "mla":
        hf = _to_deepseek_v3(model)
    elif arch.get("norm") == "rmsnorm" and arch.get("use_rope"):
        hf = _to_llama(model)
    else:
        raise UnsupportedArchitectureError(
            "to_hf exports GPT-2 (layernorm, learned positions) or Llama (rmsnorm, RoPE) architectures; "
            f"this model has norm={arch.get('norm')!r}, use_rope={arch.get('use_rope')!r}"
        )
    out = Path(path)
    hf.save_pretrained(out)
    return out


# -- GPT-2 -------------------------------------------------------------------------------------------------------
# GPT-2 stores its projections as Conv1D, weight (in, out): y = x @ W + b. nn.Linear is (out, in), so transpose.


def _gpt2_arch(config: Any) -> dict[str, Any]:
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UnsupportedArchitectureError(
            f"GPT-2 activation {config.activation_function!r}: only the tanh GELU is mapped"
        )
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(config, "reorder_and_upcast_attn", False):
        raise UnsupportedArchitectureError(
            "GPT-2 scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not mapped"
        )
    return dict(
        vocab_size=config.vocab_size,
        d_model=config.n_embd,
        n_layers=config.n_layer,
        n_heads=config.n_head,
        d_ff=config.n_inner or 4 * config.n_embd,
        activation="gelu",
        norm="layernorm",
        norm_eps=config.layer_norm_epsilon,
        dropout=config.resid_pdrop,
        attention_dropout=config.attn_pdrop,
        max_seq_len=config.n_positions,
        use_rope=False,
        tie_embeddings=True,
        bias=True,
        causal=True,
        initializer_range=config.initializer_range,
    )


def _gpt2_pairs(model: Transformer) -> list[tuple[str, torch.Tensor, bool]]:
    """(hf name, stackwise tensor, transpose) for every GPT-2 weight; q/k/v are concatenated into c_attn."""
    pairs = [
        ("transformer.wte.weight", model.embed.weight, False),
        ("transformer.wpe.weight", model.pos_embed.weight, False),
        ("transformer.ln_f.weight", model.norm.weight, False),
        ("transformer.ln_f.bias", model.norm.bias, False),
    ]
    for i, layer in enumerate(model.layers):
        a, m, p = layer.attn, layer.mlp, f"transformer.h.{i}"
        pairs += [
            (f"{p}.ln_1.weight", layer.norm1.weight, False),
            (f"{p}.ln_1.bias", layer.norm1.bias, False),
            (f"{p}.ln_2.weight", layer.norm2.weight, False),
            (f"{p}.ln_2.bias", layer.norm2.bias, False),
            (f"{p}.attn.c_attn.weight", torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], 0), True),
            (f"{p}.attn.c_attn.bias", torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias], 0), False),
            (f"{p}.attn.c_proj.weight", a.o_proj.weight, True),
            (f"{p}.attn.c_proj.bias", a.o_proj.bias, False),
            (f"{p}.mlp.c_fc.weight", m.up_proj.weight, True),
            (f"{p}.mlp.c_fc.bias", m.up_proj.bias, False),
            (f"{p}.mlp.c_proj.weight", m.down_proj.weight, True),
            (f"{p}.mlp.c_proj.bias", m.down_proj.bias, False),
        ]
    return pairs


@torch.no_grad()
def _from_gpt2(hf_model: Any) -> Transformer:
    model = transformer(**_gpt2_arch(hf_model.config))
    hf = hf_model.state_dict()
    d = model.arch["d_model"]
    for name, target, transpose in _gpt2_pairs(model):
        source = hf[name].t() if transpose else hf[name]
        if name.endswith("c_attn.weight") or name.endswith("c_attn.bias"):
            i = int(name.split(".")[2])
            attn = model.layers[i].attn
            kind = "weight" if name.endswith("weight") else "bias"
            for j, proj in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
                getattr(proj, kind).copy_(source[j * d : (j + 1) * d])
        else:
            target.copy_(source)
    return model


@torch.no_grad()
def _to_gpt2(model: Transformer) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    arch = model.arch
    if arch["n_kv_heads"] not in (None, arch["n_heads"]) or not arch["bias"] or not arch["tie_embeddings"]:
        raise UnsupportedArchitectureError("GPT-2 export needs full multi-head attention, biases and tied embeddings")
    if arch["activation"] != "gelu" or not arch["causal"]:
        raise UnsupportedArchitectureError("GPT-2 export needs the GELU MLP and causal attention")
    config = GPT2Config(
        vocab_size=arch["vocab_size"],
        n_embd=arch["d_model"],
        n_layer=arch["n_layers"],
        n_head=arch["n_heads"],
        n_inner=arch["d_ff"],
        n_positions=arch["max_seq_len"],
        activation_function="gelu_new",
        layer_norm_epsilon=arch["norm_eps"],
        resid_pdrop=arch["dropout"],
        embd_pdrop=arch["dropout"],
        attn_pdrop=arch["attention_dropout"],
        initializer_range=arch["initializer_range"],
        tie_word_embeddings=True,
        bos_token_id=50256 if arch["vocab_size"] > 50256 else None,  # GPT-2's <|endoftext|>, when it exists
        eos_token_id=50256 if arch["vocab_size"] > 50256 else None,
    )
    hf = GPT2LMHeadModel(config)
    state = hf.state_dict()
    for name, tensor, transpose in _gpt2_pairs(model):
        state[name].copy_(tensor.t() if transpose else tensor)
    hf.tie_weights()
    return hf


def _rope_theta(config: Any) -> float:
    """The RoPE base of a Llama-family config (transformers 4: rope_theta; 5: rope_parameters); plain RoPE only."""
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": config.rope_theta}
    if rope.get("rope_type", "default") != "default":
        raise UnsupportedArchitectureError(
            f"{config.model_type} rope_type {rope.get('rope_type')!r} is not mapped (only default RoPE)"
        )
    return float(rope["rope_theta"])


# -- Llama -------------------------------------------------------------------------------------------------------


def _llama_arch(config: Any) -> dict[str, Any]:
    if config.hidden_act != "silu":
        raise UnsupportedArchitectureError(f"Llama hidden_act {config.hidden_act!r}: only silu (SwiGLU) is mapped")
    if bool(config.attention_bias) != bool(getattr(config, "mlp_bias", False)):
        raise UnsupportedArchitectureError("Llama with attention_bias != mlp_bias is not mapped")
    return dict(
        vocab_size=config.vocab_size,
        d_model=config.hidden_size,
        n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        d_ff=config.intermediate_size,
        activation="silu",
        norm="rmsnorm",
        norm_eps=config.rms_norm_eps,
        attention_dropout=config.attention_dropout,
        max_seq_len=config.max_position_embeddings,
        use_rope=True,
        rope_theta=_rope_theta(config),
        tie_embeddings=bool(config.tie_word_embeddings),
        bias=bool(config.attention_bias),
        causal=True,
        initializer_range=config.initializer_range,
    )


def _llama_pairs(model: Transformer) -> list[tuple[str, torch.Tensor]]:
    pairs = [("model.embed_tokens.weight", model.embed.weight), ("model.norm.weight", model.norm.weight)]
    if not model.arch["tie_embeddings"]:
        pairs.append(("lm_head.weight", model.head.weight))
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}"
        modules = {
            "self_attn.q_proj": layer.attn.q_proj,
            "self_attn.k_proj": layer.attn.k_proj,
            "self_attn.v_proj": layer.attn.v_proj,
            "self_attn.o_proj": layer.attn.o_proj,
            "mlp.gate_proj": layer.mlp.gate_proj,
            "mlp.up_proj": layer.mlp.up_proj,
            "mlp.down_proj": layer.mlp.down_proj,
        }
        for hf_name, module in modules.items():
            pairs.append((f"{p}.{hf_name}.weight", module.weight))
            if module.bias is not None:
                pairs.append((f"{p}.{hf_name}.bias", module.bias))
        pairs += [
            (f"{p}.input_layernorm.weight", layer.norm1.weight),
            (f"{p}.post_attention_layernorm.weight", layer.norm2.weight),
        ]
    return pairs


@torch.no_grad()
def _from_llama(hf_model: Any) -> Transformer:
    model = transformer(**_llama_arch(hf_model.config))
    hf = hf_model.state_dict()
    for name, target in _llama_pairs(model):
        target.copy_(hf[name])
    return model


@torch.no_grad()
def _to_llama(model: Transformer) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = model.arch
    if arch["activation"] != "silu" or not arch["causal"]:
        raise UnsupportedArchitectureError("Llama export needs the SwiGLU (silu) MLP and causal attention")
    config = LlamaConfig(
        vocab_size=arch["vocab_size"],
        hidden_size=arch["d_model"],
        intermediate_size=arch["d_ff"],
        num_hidden_layers=arch["n_layers"],
        num_attention_heads=arch["n_heads"],
        num_key_value_heads=arch["n_kv_heads"] or arch["n_heads"],
        head_dim=arch["head_dim"] or arch["d_model"] // arch["n_heads"],
        max_position_embeddings=arch["max_seq_len"],
        rms_norm_eps=arch["norm_eps"],
        rope_theta=arch["rope_theta"],
        tie_word_embeddings=arch["tie_embeddings"],
        attention_bias=arch["bias"],
        mlp_bias=arch["bias"],
        attention_dropout=arch["attention_dropout"],
        initializer_range=arch["initializer_range"],
    )
    hf = LlamaForCausalLM(config)
    state = hf.state_dict()
    for name, tensor in _llama_pairs(model):
        state[name].copy_(tensor)
    hf.tie_weights()
    return hf


# -- DeepSeek-V3 (multi-head latent attention, dense MLPs) -----------------------------------------------------------
# DeepSeek-V3 rotates interleaved pairs (x0, x1), (x2, x3), ... when config.rope_interleave is true; stackwise
# rotates the half-split pairs (i, i + d/2). Permuting the rotary rows of the projections that produce them
# turns one layout into the other exactly, so weights are permuted on import and exported with
# rope_interleave=False.


def _rope_rows(total: int, start: int, rot: int, period: int | None = None) -> torch.Tensor:
    """Row order that de-interleaves the rotary rows [start, start + rot) of every `period`-row head."""
    order = torch.arange(total)
    period = period or total
    inner = torch.cat([torch.arange(0, rot, 2), torch.arange(1, rot, 2)])
    for head in range(total // period):
        base = head * period + start
        order[base : base + rot] = base + inner
    return order


def _deepseek_arch(config: Any) -> dict[str, Any]:
    if config.first_k_dense_replace < config.num_hidden_layers:
        raise UnsupportedArchitectureError(
            "DeepSeek-V3 MoE layers are not mapped: set first_k_dense_replace = num_hidden_layers"
        )
    if config.hidden_act != "silu":
        raise UnsupportedArchitectureError(f"DeepSeek-V3 hidden_act {config.hidden_act!r}: only silu is mapped")
    if config.attention_bias:
        raise UnsupportedArchitectureError(
            "DeepSeek-V3 with attention_bias is not mapped (stackwise biases every projection)"
        )
    return dict(
        vocab_size=config.vocab_size,
        d_model=config.hidden_size,
        n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads,
        d_ff=config.intermediate_size,
        activation="silu",
        norm="rmsnorm",
        norm_eps=config.rms_norm_eps,
        attention_dropout=config.attention_dropout,
        max_seq_len=config.max_position_embeddings,
        use_rope=True,
        rope_theta=_rope_theta(config),
        tie_embeddings=bool(config.tie_word_embeddings),
        bias=bool(config.attention_bias),
        causal=True,
        initializer_range=config.initializer_range,
        attention="mla",
        q_lora_rank=config.q_lora_rank,
        kv_lora_rank=config.kv_lora_rank,
        qk_rope_head_dim=config.qk_rope_head_dim,
        qk_nope_head_dim=config.qk_nope_head_dim,
        v_head_dim=config.v_head_dim,
    )


def _deepseek_pairs(model: Transformer) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """(hf name, stackwise tensor, row order of the interleaved layout or None)."""
    a = model.arch
    qk = a["qk_nope_head_dim"] + a["qk_rope_head_dim"]
    q_rows = _rope_rows(a["n_heads"] * qk, a["qk_nope_head_dim"], a["qk_rope_head_dim"], qk)
    kv_rows = _rope_rows(a["kv_lora_rank"] + a["qk_rope_head_dim"], a["kv_lora_rank"], a["qk_rope_head_dim"])
    pairs: list[tuple[str, torch.Tensor, torch.Tensor | None]] = [
        ("model.embed_tokens.weight", model.embed.weight, None),
        ("model.norm.weight", model.norm.weight, None),
    ]
    if not a["tie_embeddings"]:
        pairs.append(("lm_head.weight", model.head.weight, None))
    for i, layer in enumerate(model.layers):
        p, attn, mlp = f"model.layers.{i}", layer.attn, layer.mlp
        if attn.q_proj is not None:
            pairs.append((f"{p}.self_attn.q_proj.weight", attn.q_proj.weight, q_rows))
        else:
            pairs += [
                (f"{p}.self_attn.q_a_proj.weight", attn.q_a_proj.weight, None),
                (f"{p}.self_attn.q_a_layernorm.weight", attn.q_norm.weight, None),
                (f"{p}.self_attn.q_b_proj.weight", attn.q_b_proj.weight, q_rows),
            ]
        pairs += [
            (f"{p}.self_attn.kv_a_proj_with_mqa.weight", attn.kv_a_proj.weight, kv_rows),
            (f"{p}.self_attn.kv_a_layernorm.weight", attn.kv_norm.weight, None),
            (f"{p}.self_attn.kv_b_proj.weight", attn.kv_b_proj.weight, None),
            (f"{p}.self_attn.o_proj.weight", attn.o_proj.weight, None),
            (f"{p}.mlp.gate_proj.weight", mlp.gate_proj.weight, None),
            (f"{p}.mlp.up_proj.weight", mlp.up_proj.weight, None),
            (f"{p}.mlp.down_proj.weight", mlp.down_proj.weight, None),
            (f"{p}.input_layernorm.weight", layer.norm1.weight, None),
            (f"{p}.post_attention_layernorm.weight", layer.norm2.weight, None),
        ]
    return pairs


@torch.no_grad()
def _from_deepseek_v3(hf_model: Any) -> Transformer:
    model = transformer(**_deepseek_arch(hf_model.config))
    interleaved = bool(getattr(hf_model.config, "rope_interleave", True))
    hf = hf_model.state_dict()
    for name, target, rows in _deepseek_pairs(model):
        source = hf[name]
        target.copy_(source[rows] if rows is not None and interleaved else source)
    return model


@torch.no_grad()
def _to_deepseek_v3(model: Transformer) -> Any:
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    a = model.arch
    if a["activation"] != "silu" or not a["causal"] or a["norm"] != "rmsnorm" or a["bias"]:
        raise UnsupportedArchitectureError("DeepSeek-V3 export needs SwiGLU MLPs, RMSNorm, causal attention, no biases")
    config = DeepseekV3Config(
        vocab_size=a["vocab_size"],
        hidden_size=a["d_model"],
        intermediate_size=a["d_ff"],
        num_hidden_layers=a["n_layers"],
        num_attention_heads=a["n_heads"],
        num_key_value_heads=a["n_heads"],
        q_lora_rank=a["q_lora_rank"],
        kv_lora_rank=a["kv_lora_rank"],
        qk_rope_head_dim=a["qk_rope_head_dim"],
        qk_nope_head_dim=a["qk_nope_head_dim"],
        v_head_dim=a["v_head_dim"],
        first_k_dense_replace=a["n_layers"],
        rope_interleave=False,
        max_position_embeddings=a["max_seq_len"],
        rms_norm_eps=a["norm_eps"],
        rope_theta=a["rope_theta"],
        tie_word_embeddings=a["tie_embeddings"],
        attention_bias=a["bias"],
        attention_dropout=a["attention_dropout"],
        initializer_range=a["initializer_range"],
    )
    hf = DeepseekV3ForCausalLM(config)
    state = hf.state_dict()
    for name, tensor, _ in _deepseek_pairs(model):
        state[name].copy_(tensor)
    hf.tie_weights()
    return hf
