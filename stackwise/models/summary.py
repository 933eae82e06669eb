"""Size, compute and memory of a configured model, by arithmetic: no torch, nothing allocated.

Parameter counts follow the modules in `layers.py` / `transformer.py` exactly (a test compares them with
built models). FLOPs count matrix multiplies (2 per multiply-add): forward = 2 x matmul parameters +
attention scores and values (4 x T x H x Dh per layer and token, halved when causal); training = 3 x forward.
Memory is an estimate for planning, not a measurement (see `estimate_memory`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.schema import StackwiseConfig
from ..config.tokenizers import pretrained_width

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "auto": 2}


@dataclass
class Component:
    name: str
    params: int
    trainable: int
    active_per_token: int
    note: str = ""


@dataclass
class Summary:
    components: list[Component] = field(default_factory=list)
    matmul_params: int = 0  # parameters used in matrix multiplies per token (embedding lookups excluded)
    attention_flops_per_token: int = 0  # forward
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(c.params for c in self.components)

    @property
    def trainable(self) -> int:
        return sum(c.trainable for c in self.components)

    @property
    def active_per_token(self) -> int:
        return sum(c.active_per_token for c in self.components)

    @property
    def forward_flops_per_token(self) -> int:
        return 2 * self.matmul_params + self.attention_flops_per_token

    @property
    def training_flops_per_token(self) -> int:
        return 3 * self.forward_flops_per_token


def _norm(kind: str, dim: int) -> int:
    return dim if kind == "rmsnorm" else 2 * dim


def _attention(cfg: StackwiseConfig) -> tuple[int, str]:
    m = cfg.model
    d, h = m.d_model, m.n_heads
    if m.attention_type == "mla":
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q = d * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * h * qk if a.q_lora_rank else d * h * qk
        kv = (
            d * (a.kv_lora_rank + a.qk_rope_head_dim)
            + a.kv_lora_rank
            + a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
        )
        return q + kv + h * a.v_head_dim * d, ""
    hd, hkv = m.resolved_head_dim, m.kv_heads
    params = d * h * hd + 2 * d * hkv * hd + h * hd * d
    if m.bias:
        params += h * hd + 2 * hkv * hd + d
    if m.subln.enabled:
        params += _norm("rmsnorm", h * hd)
    return params, ""


def _mlp(cfg: StackwiseConfig) -> int:
    m = cfg.model
    d, f = m.d_model, m.resolved_d_ff
    gated = m.ffn_activation != "gelu"
    params = (3 if gated else 2) * d * f
    if m.bias:
        params += (2 * f if gated else f) + d
    if m.subln.enabled:
        params += _norm("rmsnorm", f)
    return params


def _peer(cfg: StackwiseConfig) -> tuple[int, int]:
    """(parameters, active per token) of one PEER layer: query projection, product keys, single-neuron experts."""
    m, p = cfg.model, cfg.model.peer
    n_sub = len(p.product_key_dim)
    query = m.d_model * p.num_heads * p.query_dim + (2 * p.query_dim if p.batch_norm_query else 0)
    keys = p.num_heads * sum(p.product_key_dim) * (p.query_dim // n_sub)
    experts = p.num_experts * 2 * m.d_model * p.expert_hidden_size
    active = query + p.num_heads * p.num_experts_per_tok * 2 * m.d_model * p.expert_hidden_size
    return query + keys + experts, active


def summarize(cfg: StackwiseConfig, vocab_size: int | None = None, seq_len: int | None = None) -> Summary:
    """Parameters per component, FLOPs per token and a training-memory estimate for `cfg`."""
    m = cfg.model
    vocab = m.vocab_size or vocab_size or 50257
    t = seq_len or cfg.training.seq_len
    out = Summary()
    te = m.tokenizer_embedding
    width = (pretrained_width(te.family, te.path) or m.d_model) if te is not None else m.d_model
    embed = vocab * width
    out.components.append(Component("token embeddings", embed, 0 if te and te.freeze_embeddings else embed, width))
    if width != m.d_model:
        hidden = te.adapter_hidden_dim if te else None
        adapter = width * hidden + hidden + hidden * m.d_model + m.d_model if hidden else width * m.d_model + m.d_model
        out.components.append(Component("embedding adapter", adapter, adapter, adapter))
    if not m.use_rope:
        pos = m.max_seq_len * m.d_model
        out.components.append(Component("position embeddings", pos, pos, m.d_model))
    attn, attn_note = _attention(cfg)
    n_peer = max(0, m.n_layers - m.peer_start_layer) if m.use_peer else 0
    n_dense = m.n_layers - n_peer
    mlp = _mlp(cfg)
    norms = 2 * _norm(m.norm_type, m.d_model)
    out.components.append(
        Component(f"attention x{m.n_layers}", attn * m.n_layers, attn * m.n_layers, attn * m.n_layers, attn_note)
    )
    if n_dense:
        out.components.append(Component(f"MLP x{n_dense}", mlp * n_dense, mlp * n_dense, mlp * n_dense))
    matmul = attn * m.n_layers + mlp * n_dense
    if n_peer:
        peer, active = _peer(cfg)
        out.components.append(Component(f"PEER x{n_peer}", peer * n_peer, peer * n_peer, active * n_peer))
        matmul += active * n_peer
    final = _norm(m.norm_type, m.d_model)
    out.components.append(Component("norms", norms * m.n_layers + final, norms * m.n_layers + final, 0))
    head = 0 if m.tie_embeddings else vocab * m.d_model
    out.components.append(
        Component("output head" + (" (tied)" if m.tie_embeddings else ""), head, head, vocab * m.d_model)
    )
    out.matmul_params = matmul + vocab * m.d_model
    heads_dim = m.n_heads * (
        m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim if m.attention_type == "mla" else m.resolved_head_dim
    )
    causal = 0.5 if m.attention_mode == "causal" else 1.0
    out.attention_flops_per_token = int(4 * t * heads_dim * m.n_layers * causal)
    out.memory = estimate_memory(cfg, out, t)
    return out


def estimate_memory(cfg: StackwiseConfig, summary: Summary, seq_len: int) -> dict[str, int]:
    """Bytes for weights (fp32 master copy), gradients, optimizer state and activations of one micro-batch.

    Activations follow Korthikanti et al. (2022): about T x B x D x (34 + 5 H T / D) bytes per layer in
    16-bit, twice that in fp32; with gradient checkpointing, the layer inputs (2 T B D bytes per layer) plus
    one layer's activations.
    """
    t, m = cfg.training, cfg.model
    params, trainable = summary.total, summary.trainable
    state = {"adamw": 8, "adamw_8bit": 2, "muon": 6}[t.optimizer]  # muon: momentum on matrices, AdamW on the rest
    width = 2 if t.precision in ("fp16", "bf16", "auto") else 4
    b, d, h = t.batch_size, m.d_model, m.n_heads
    per_layer = seq_len * b * d * (34 + 5 * h * seq_len / d) * width / 2
    if t.gradient_checkpointing:
        activations = 2 * seq_len * b * d * m.n_layers + per_layer
    else:
        activations = per_layer * m.n_layers
    activations += seq_len * b * (m.vocab_size or 50257) * 4  # fp32 logits for the loss
    return {
        "weights": 4 * params,
        "gradients": 4 * trainable,
        "optimizer": state * trainable,
        "activations": int(activations),
    }
