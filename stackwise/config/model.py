"""The `model` section: transformer architecture, attention variants, PEER, MLA, BitNet and embeddings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .fields import Section, field, synonyms

KernelChoice = Literal["auto", "torch", "triton"]


class MLAConfig(Section):
    """DeepSeek-style multi-head latent attention (guide 001's `mla_config`). Used when `attention_type: mla`."""

    q_lora_rank: int | None = field(
        1536, "Rank of the low-rank query projection; null projects queries directly from d_model.", ge=1
    )
    kv_lora_rank: int = field(512, "Rank of the shared key-value latent (the compressed KV cache).", ge=1)
    qk_rope_head_dim: int = field(64, "Per-head query/key dimensions that carry RoPE (decoupled RoPE). Even.", ge=1)
    qk_nope_head_dim: int = field(128, "Per-head query/key dimensions without positional encoding.", ge=1)
    v_head_dim: int = field(128, "Per-head value dimension.", ge=1)


class PEERConfig(Section):
    """Parameter-efficient expert retrieval layers (guide 001's `peer_config`). Used when `use_peer: true`."""

    num_experts: int = field(1048576, "Total number of experts; must equal the product of product_key_dim.", ge=1)
    num_experts_per_tok: int = field(16, "Experts activated per token and retrieval head.", ge=1)
    num_heads: int = field(8, "Number of expert retrieval heads.", ge=1)
    expert_hidden_size: int = field(1, "Hidden size of each expert MLP (1 = single-neuron experts).", ge=1)
    product_key_dim: tuple[Annotated[int, Field(ge=1)], ...] = field(
        (1024, 1024), "Sub-key counts of the product-key retrieval; their product is num_experts.", min_length=1
    )
    query_dim: int = field(256, "Dimension of the retrieval query; divisible by the number of sub-keys.", ge=1)
    batch_norm_query: bool = field(True, "Normalise the retrieval query before scoring (as the guide: a LayerNorm).")
    log_expert_usage: bool = field(False, "Count expert usage and log it (JSONL / TensorBoard / W&B).")
    log_freq: int = field(1000, "Steps between expert-usage logs.", ge=1)
    usage_threshold: float = field(5.0, "Flag an expert as 'hot' above this multiple of the mean usage.", gt=0)


class TokenizerEmbeddingConfig(Section):
    """Initialise token embeddings from a pretrained model (guide 000's `tokenizer_embedding`)."""

    family: Literal["gpt2", "llama-3-8b", "mistral-7b"] = field(
        "gpt2", "Pretrained model family whose tokenizer and input embeddings are used."
    )
    embedding_option: Literal["embed_tokens", "lm_head"] = field(
        "embed_tokens", "Which pretrained matrix initialises the embeddings: the input embeddings or the LM head."
    )
    freeze_embeddings: bool = field(False, "Keep the copied embeddings frozen during training.")
    adapter_hidden_dim: int | None = field(
        None, "Hidden size of the adapter MLP used when the pretrained width differs from d_model.", ge=1
    )
    path: str | None = field(None, "Local directory of the pretrained model; null looks in the Hugging Face cache.")


class QuantizationConfig(Section):
    """BitNet b1.58 linear layers (guide 004's `model.quantization`)."""

    weight_bits: Literal[1.58] = field(1.58, "Weight precision: 1.58 = ternary {-1, 0, 1} with absmean scaling.")
    activation_bits: Literal[8] = field(8, "Activation precision of BitLinear inputs.")
    per_token_activation: bool = field(True, "Scale activations per token (true) or per tensor (false).")


class SubLNConfig(Section):
    """Sub-layer normalisation inserted before the output projections (guide 004's SubLN)."""

    enabled: bool = field(False, "Insert SubLN before the attention output and MLP down projections.")
    eps: float = field(1e-5, "Epsilon of the SubLN RMSNorm.", gt=0)
    elementwise_affine: bool = field(True, "Give SubLN a learnable scale.")


class ModelConfig(Section):
    """Architecture of the model. Canonical names are Stack-Wise's (guide 000); see the aliases for the others."""

    name: str | None = field(None, "Name of the architecture or preset (a label; `model=NAME` selects presets).")
    pretrained_name: str | None = field(
        None, "Hugging Face model (local path or cached hub id) whose weights initialise this model (guide 004)."
    )
    vocab_size: int | None = field(
        None,
        "Vocabulary size; null takes the tokenizer's. Must be at least the tokenizer's vocabulary.",
        ge=1,
        typical=(8000, 100000),
        guide="002",
    )
    d_model: int = field(768, "Hidden (embedding) dimension.", ge=1, typical=(512, 1024), guide="003")
    n_layers: int = field(12, "Number of transformer layers.", ge=1, typical=(6, 24), guide="003")
    n_heads: int = field(12, "Number of attention (query) heads.", ge=1)
    n_kv_heads: int | None = field(None, "Key/value heads for GQA; null = n_heads. n_heads must divide by it.", ge=1)
    head_dim: int | None = field(None, "Per-head dimension; null = d_model / n_heads.", ge=1)
    d_ff: int | None = field(None, "MLP hidden dimension; null = mlp_multiple x d_model.", ge=1)
    mlp_multiple: float | None = field(
        None, "MLP expansion factor used when d_ff is null (default 4.0).", gt=0, typical=(3.0, 8.0), guide="003"
    )
    ffn_activation: Annotated[Literal["gelu", "silu", "relu2"], synonyms({"swiglu": "silu", "gelu_new": "gelu"})] = (
        field("silu", "MLP activation: gelu (GPT-2 MLP), silu (SwiGLU, gated), relu2 (gated squared ReLU, BitNet).")
    )
    norm_type: Annotated[Literal["rmsnorm", "layernorm"], synonyms({"rms": "rmsnorm", "layer_norm": "layernorm"})] = (
        field("rmsnorm", "Normalisation layer (pre-norm).")
    )
    norm_eps: float = field(1e-5, "Epsilon of the normalisation layers.", gt=0)
    dropout: float = field(
        0.0, "Dropout on residual branches and embeddings.", ge=0, lt=1, typical=(0.0, 0.5), guide="002"
    )
    attention_dropout: float = field(0.0, "Dropout on attention probabilities.", ge=0, lt=1)
    max_seq_len: int = field(
        2048,
        "Longest sequence the model accepts (RoPE cache / learned positions).",
        ge=1,
        typical=(512, 32768),
        guide="002",
    )
    use_rope: bool = field(True, "Rotary position embeddings on queries and keys; false = learned absolute positions.")
    rope_theta: float = field(10000.0, "RoPE base frequency.", gt=0)
    tie_embeddings: bool = field(True, "Share the token embedding matrix with the output head.")
    bias: bool = field(False, "Biases on the attention and MLP projections (GPT-2 has them, Llama does not).")
    initializer_range: float = field(0.02, "Standard deviation of the normal weight initialisation.", gt=0)
    attention_type: Annotated[
        Literal["standard", "gqa", "mla", "kernel"], synonyms({"mha": "standard", "multi_head": "standard"})
    ] = field("standard", "standard (multi-head), gqa (grouped-query, n_kv_heads), mla (latent), kernel (linear-time).")
    attention_mode: Literal["causal", "bidirectional"] = field(
        "causal", "causal (decoder) or bidirectional (encoder / masked diffusion)."
    )
    kernel_type: Literal["elu", "relu", "gaussian"] = field(
        "elu", "Feature map of kernel attention: elu+1, relu, or gaussian random features (softmax kernel)."
    )
    kernel_dim: int | None = field(
        None, "Random-feature dimension for kernel_type gaussian; null = head dimension.", ge=1
    )
    attention_kernel: KernelChoice = field(
        "auto",
        "Softmax attention implementation: auto (our Triton kernel on a CUDA GPU in fp16/bf16, PyTorch SDPA "
        "elsewhere), torch (SDPA), or triton (an error where it cannot run).",
    )
    mla: MLAConfig = field(factory=MLAConfig, description="Multi-head latent attention settings (attention_type: mla).")
    use_peer: bool = field(False, "Replace the MLP of layers from peer_start_layer on with PEER expert layers.")
    peer_start_layer: int = field(0, "First layer (0-based) that uses PEER.", ge=0)
    peer: PEERConfig = field(factory=PEERConfig, description="PEER settings (use_peer: true).")
    peer_kernel: KernelChoice = field(
        "auto",
        "PEER retrieval and expert implementation: auto (our Triton kernels on a CUDA GPU in fp16/bf16, the "
        "PyTorch reference elsewhere), torch, or triton (an error where it cannot run).",
    )
    quantization: QuantizationConfig | None = field(
        None, "BitNet linear layers (ternary weights, 8-bit activations); null = full-precision linear layers."
    )
    subln: SubLNConfig = field(factory=SubLNConfig, description="SubLN settings (BitNet).")
    tokenizer_embedding: TokenizerEmbeddingConfig | None = field(
        None, "Initialise token embeddings from a pretrained model; null = random initialisation."
    )

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_kv_heads, or n_heads when unset)."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def resolved_head_dim(self) -> int:
        """Per-head dimension: head_dim, or d_model // n_heads."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def resolved_d_ff(self) -> int:
        """MLP hidden size: d_ff, or round(mlp_multiple * d_model) with mlp_multiple defaulting to 4."""
        if self.d_ff is not None:
            return self.d_ff
        return int(round((self.mlp_multiple or 4.0) * self.d_model))
