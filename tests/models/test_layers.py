"""Transformer building blocks against hand-written references and known properties (float64, tiny dims, CPU).

RoPE tables are float64 and RMSNorm computes in at least float32, so float64 inputs stay float64: comparisons
through them use 1e-10, everything else 1e-12.
"""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from stackwise.config.model import ModelConfig  # noqa: E402
from stackwise.models.builders import build_model, model_arguments  # noqa: E402
from stackwise.models.layers import MLP, Attention, RMSNorm, RotaryEmbedding, apply_rope, make_norm  # noqa: E402
from stackwise.models.network import Transformer, TransformerLayer, transformer  # noqa: E402

EXACT = dict(rtol=1e-12, atol=1e-12)  # pure float64 arithmetic
F64 = dict(rtol=1e-10, atol=1e-10)  # RoPE tables and RMSNorm keep float64 inputs in float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter (norm weights and biases included) random values, so nothing hides behind ones/zeros."""
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


def test_package_exports_the_factory_not_the_submodule() -> None:
    """`stackwise.models.network` names both a submodule and the factory; the package must export the factory."""
    from stackwise.models import Transformer as exported_class
    from stackwise.models import build_model as exported_build
    from stackwise.models import transformer as exported

    assert exported is transformer
    assert exported_class is Transformer and exported_build is build_model


# ---------------------------------------------------------------------------------------------------------------
# Norms
# ---------------------------------------------------------------------------------------------------------------


def test_rmsnorm_matches_formula() -> None:
    eps = 0.1  # large enough that leaving eps out (or putting it outside the sqrt) shows
    norm = randomize_(RMSNorm(8, eps=eps)).double()
    x = randn(3, 5, 8) * 0.3
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight
    out = norm(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, **F64)


def test_rmsnorm_keeps_half_precision_dtype() -> None:
    norm = RMSNorm(8).to(torch.bfloat16)
    x = randn(2, 8).to(torch.bfloat16)
    assert norm(x).dtype == torch.bfloat16


def test_make_norm_rmsnorm() -> None:
    norm = make_norm("rmsnorm", 8, 1e-3)
    assert isinstance(norm, RMSNorm) and norm.eps == 1e-3 and norm.weight.shape == (8,)


def test_make_norm_layernorm_matches_formula() -> None:
    eps = 0.2
    norm = make_norm("layernorm", 8, eps)
    assert isinstance(norm, nn.LayerNorm) and norm.bias is not None  # GPT-2 style: with bias
    randomize_(norm).double()
    x = randn(4, 8) * 0.3
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased variance
    expected = (x - mean) / torch.sqrt(var + eps) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected, **EXACT)


def test_make_norm_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="batchnorm"):
        make_norm("batchnorm", 8, 1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Rotary embeddings
# ---------------------------------------------------------------------------------------------------------------


def rope_reference(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Independent RoPE: pair dimension i with i + d/2 as a complex number and turn it by pos * theta^(-2i/d)."""
    d = x.shape[-1]
    half = d // 2
    i = torch.arange(half, dtype=torch.float64)
    angles = positions.to(torch.float64)[:, None] * theta ** (-2 * i / d)  # (T, d/2)
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], dim=-1)


def rotate(x: torch.Tensor, rope: RotaryEmbedding, offset: int = 0) -> torch.Tensor:
    cos, sin = rope(x.shape[-2], offset=offset)
    return apply_rope(x, cos, sin)


@pytest.mark.parametrize("theta", [10000.0, 500.0])
def test_rope_matches_complex_reference(theta: float) -> None:
    rope = RotaryEmbedding(8, max_seq_len=32, theta=theta)
    x = randn(2, 3, 11, 8)
    torch.testing.assert_close(rotate(x, rope), rope_reference(x, torch.arange(11), theta), **F64)
    # with an offset the positions start there
    torch.testing.assert_close(rotate(x, rope, offset=5), rope_reference(x, torch.arange(5, 16), theta), **F64)


def test_rope_preserves_the_norm_of_each_pair() -> None:
    d = 8
    rope = RotaryEmbedding(d, max_seq_len=32)
    x = randn(2, 3, 17, d)
    out = rotate(x, rope)
    pair_norm = lambda t: t[..., : d // 2].pow(2) + t[..., d // 2 :].pow(2)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x), **F64)
    assert not torch.allclose(out, x)  # and it does turn them


def test_rope_position_zero_is_identity() -> None:
    rope = RotaryEmbedding(8, max_seq_len=4)
    x = randn(2, 3, 1, 8)
    assert torch.equal(rotate(x, rope), x)


@pytest.mark.parametrize("m,n,shift", [(3, 1, 5), (0, 7, 9), (4, 4, 20), (10, 2, 13)])
def test_rope_dot_product_depends_only_on_relative_position(m: int, n: int, shift: int) -> None:
    rope = RotaryEmbedding(16, max_seq_len=64)
    q, k = randn(1, 1, 1, 16, seed=1), randn(1, 1, 1, 16, seed=2)

    def score(pos_q: int, pos_k: int) -> torch.Tensor:
        return (rotate(q, rope, offset=pos_q) * rotate(k, rope, offset=pos_k)).sum()

    torch.testing.assert_close(score(m + shift, n + shift), score(m, n), **F64)
    if m != n:  # the score does depend on m - n
        assert not torch.allclose(score(m, n), score(m, m))


def test_rope_rejects_odd_dimension() -> None:
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7, max_seq_len=8)


def test_rope_rejects_positions_past_max_seq_len() -> None:
    rope = RotaryEmbedding(8, max_seq_len=8)
    cos, sin = rope(8)  # exactly max_seq_len is fine
    assert cos.shape == sin.shape == (8, 8)
    with pytest.raises(ValueError, match="max_seq_len"):
        rope(9)
    with pytest.raises(ValueError, match="max_seq_len"):
        rope(2, offset=7)


# ---------------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------------


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    out = x @ layer.weight.T
    return out + layer.bias if layer.bias is not None else out


def attention_reference(attn: Attention, x: torch.Tensor, *, causal: bool, theta: float | None) -> torch.Tensor:
    """Explicit projections, RoPE, softmax(QK^T / sqrt(d)) with an optional causal mask, sum over V, output."""
    B, T, _ = x.shape
    H, Hkv, Dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = linear(x, attn.q_proj).view(B, T, H, Dh).transpose(1, 2)
    k = linear(x, attn.k_proj).view(B, T, Hkv, Dh).transpose(1, 2)
    v = linear(x, attn.v_proj).view(B, T, Hkv, Dh).transpose(1, 2)
    if theta is not None:
        q, k = rope_reference(q, torch.arange(T), theta), rope_reference(k, torch.arange(T), theta)
    group = H // Hkv  # query heads h*group .. (h+1)*group - 1 read K/V head h
    k = torch.stack([k[:, h // group] for h in range(H)], dim=1)
    v = torch.stack([v[:, h // group] for h in range(H)], dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, T)
    if causal:
        future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    out = scores.softmax(-1) @ v  # (B, H, T, Dh)
    return linear(out.transpose(1, 2).reshape(B, T, H * Dh), attn.o_proj)


ATTENTION_CASES = {
    "mha": dict(n_heads=4, n_kv_heads=None, head_dim=None, bias=False, rope=True),
    "gqa": dict(n_heads=4, n_kv_heads=2, head_dim=None, bias=False, rope=True),
    "gqa-bias-headdim": dict(n_heads=4, n_kv_heads=2, head_dim=6, bias=True, rope=True),
    "mqa-norope": dict(n_heads=4, n_kv_heads=1, head_dim=None, bias=True, rope=False),
}


def make_attention(case: dict, *, causal: bool, theta: float = 100.0, dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    head_dim = case["head_dim"] or 16 // case["n_heads"]
    rope = RotaryEmbedding(head_dim, max_seq_len=32, theta=theta) if case["rope"] else None
    attn = Attention(
        16,
        case["n_heads"],
        case["n_kv_heads"],
        case["head_dim"],
        causal=causal,
        bias=case["bias"],
        dropout=dropout,
        rope=rope,
    )
    return randomize_(attn, seed).double().eval()


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("name", list(ATTENTION_CASES))
def test_attention_matches_manual_reference(name: str, causal: bool) -> None:
    case = ATTENTION_CASES[name]
    attn = make_attention(case, causal=causal, dropout=0.5)  # eval mode: no attention dropout
    x = randn(2, 9, 16, seed=3)
    expected = attention_reference(attn, x, causal=causal, theta=100.0 if case["rope"] else None)
    torch.testing.assert_close(attn(x), expected, **F64)


def test_gqa_projects_only_n_kv_heads() -> None:
    attn = Attention(16, 4, 2)
    assert attn.q_proj.weight.shape == (16, 16)
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (8, 16)


@pytest.mark.parametrize("name", ["mha", "gqa"])
def test_causal_attention_ignores_the_future_and_bidirectional_does_not(name: str) -> None:
    x = randn(2, 10, 16, seed=4)
    t = 5
    changed = x.clone()
    changed[:, t + 1 :] = randn(2, 10 - t - 1, 16, seed=5)
    causal = make_attention(ATTENTION_CASES[name], causal=True)
    assert torch.equal(causal(x)[:, : t + 1], causal(changed)[:, : t + 1])
    assert not torch.allclose(causal(x)[:, t + 1 :], causal(changed)[:, t + 1 :])
    bidirectional = make_attention(ATTENTION_CASES[name], causal=False)
    assert not torch.allclose(bidirectional(x)[:, t], bidirectional(changed)[:, t])


def test_attention_rejects_heads_not_divisible_by_kv_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Attention(24, 6, 4)


# ---------------------------------------------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------------------------------------------


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + torch.exp(-x))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "silu", "relu2"])
def test_mlp_matches_reference(activation: str, bias: bool) -> None:
    mlp = randomize_(MLP(8, 12, activation, bias=bias)).double()
    x = randn(2, 5, 8, seed=6)
    up, down = linear(x, mlp.up_proj), mlp.down_proj
    if activation == "gelu":
        assert mlp.gate_proj is None
        expected = linear(gelu_tanh(up), down)
    elif activation == "silu":
        expected = linear(silu(linear(x, mlp.gate_proj)) * up, down)
    else:
        expected = linear(linear(x, mlp.gate_proj).clamp(min=0) ** 2 * up, down)
    torch.testing.assert_close(mlp(x), expected, **EXACT)


def test_mlp_gelu_is_the_tanh_approximation_not_erf() -> None:
    mlp = randomize_(MLP(8, 12, "gelu")).double()
    x = randn(2, 5, 8, seed=6) * 3
    erf = linear(torch.nn.functional.gelu(linear(x, mlp.up_proj)), mlp.down_proj)
    assert not torch.allclose(mlp(x), erf, rtol=1e-9, atol=1e-9)


def test_mlp_rejects_unknown_activation() -> None:
    with pytest.raises(ValueError, match="tanh"):
        MLP(8, 12, "tanh")


# ---------------------------------------------------------------------------------------------------------------
# transformer(...)
# ---------------------------------------------------------------------------------------------------------------

VOCAB = 37
TINY = dict(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=4, max_seq_len=16)

MODEL_CASES = {
    "llama-like": dict(n_kv_heads=2, activation="silu", norm="rmsnorm", use_rope=True, tie_embeddings=False),
    "gpt2-like": dict(activation="gelu", norm="layernorm", use_rope=False, tie_embeddings=True, bias=True),
    "relu2-bidirectional": dict(activation="relu2", causal=False, head_dim=6, d_ff=24),
}


def model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return transformer(**{**TINY, **overrides})


def token_ids(batch: int = 2, seq: int = 11, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=gen(seed))


def next_token_loss(m: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = m(ids[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_transformer_output_shape(name: str) -> None:
    m = model(**MODEL_CASES[name]).eval()
    ids = token_ids(3, 9)
    assert m(ids).shape == (3, 9, VOCAB)
    assert m.hidden_states(ids).shape == (3, 9, 16)
    assert len(m.layers) == 2 and all(isinstance(layer, TransformerLayer) for layer in m.layers)


def test_tied_embeddings_share_storage() -> None:
    tied = model(tie_embeddings=True)
    assert tied.head.weight is tied.embed.weight
    assert sum(p is tied.embed.weight for p in tied.parameters()) == 1  # counted once
    untied = model(tie_embeddings=False)
    assert untied.head.weight is not untied.embed.weight
    assert untied.head.weight.data_ptr() != untied.embed.weight.data_ptr()
    assert not torch.equal(untied.head.weight, untied.embed.weight)


@pytest.mark.parametrize("use_rope", [True, False])
def test_learned_positions_exist_iff_rope_is_off(use_rope: bool) -> None:
    m = model(use_rope=use_rope)
    if use_rope:
        assert m.pos_embed is None
        assert all(layer.attn.rope is not None for layer in m.layers)
    else:
        assert isinstance(m.pos_embed, nn.Embedding) and m.pos_embed.weight.shape == (16, 16)
        assert all(layer.attn.rope is None for layer in m.layers)


@pytest.mark.parametrize("use_rope", [True, False])
def test_causal_model_ignores_later_tokens_bidirectional_does_not(use_rope: bool) -> None:
    ids = token_ids(2, 12)
    t = 6
    changed = ids.clone()
    changed[:, t + 1 :] = (ids[:, t + 1 :] + 1) % VOCAB
    with torch.no_grad():
        causal = model(use_rope=use_rope).double().eval()
        assert torch.equal(causal(ids)[:, : t + 1], causal(changed)[:, : t + 1])
        bidirectional = model(use_rope=use_rope, causal=False).double().eval()
        assert not torch.allclose(bidirectional(ids)[:, : t + 1], bidirectional(changed)[:, : t + 1])


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_gradient_checkpointing_gives_same_loss_and_gradients(name: str) -> None:
    plain = model(**MODEL_CASES[name], dropout=0.0, attention_dropout=0.0).double().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_gradient_checkpointing(True)
    assert all(layer.gradient_checkpointing for layer in checkpointed.layers)

    calls = []
    checkpointed.layers[0].attn.register_forward_pre_hook(lambda *_: calls.append(1))
    ids = token_ids()
    loss_plain = next_token_loss(plain, ids)
    loss_ckpt = next_token_loss(checkpointed, ids)
    loss_plain.backward()
    loss_ckpt.backward()
    assert len(calls) == 2  # the layer really was recomputed in the backward pass

    torch.testing.assert_close(loss_ckpt, loss_plain, **EXACT)
    grads_ckpt = dict(checkpointed.named_parameters())
    for name_, p in plain.named_parameters():
        torch.testing.assert_close(grads_ckpt[name_].grad, p.grad, **EXACT, msg=name_)


def test_gradient_checkpointing_recomputes_where_a_gradient_passes_and_only_there() -> None:
    m = model()
    m.set_gradient_checkpointing(True)
    calls = []
    m.layers[0].attn.register_forward_pre_hook(lambda *_: calls.append(1))
    m.eval()  # a frozen (eval-mode) layer that a gradient passes through is recomputed in the backward
    next_token_loss(m, token_ids()).backward()
    assert len(calls) == 2
    calls.clear()
    with torch.no_grad():  # no graph: nothing to recompute
        m(token_ids())
    assert len(calls) == 1
    m.set_gradient_checkpointing(False)
    assert not any(layer.gradient_checkpointing for layer in m.layers)


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_every_parameter_gets_a_gradient(name: str) -> None:
    m = model(**MODEL_CASES[name]).train()
    next_token_loss(m, token_ids(2, 16)).backward()
    for name_, p in m.named_parameters():
        assert p.grad is not None, f"{name_} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name_} got an all-zero gradient"


@pytest.mark.parametrize("initializer_range", [0.02, 0.05])
def test_init_weights(initializer_range: float) -> None:
    n_layers = 3
    m = transformer(
        vocab_size=512,
        d_model=64,
        n_layers=n_layers,
        n_heads=4,
        d_ff=128,
        bias=True,
        use_rope=False,
        norm="layernorm",
        tie_embeddings=False,
        initializer_range=initializer_range,
    )
    residual = initializer_range / math.sqrt(2 * n_layers)
    seen = {"residual": 0, "other": 0}
    for name, module in m.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            w = module.weight.detach()
            is_residual = name.endswith(("o_proj", "down_proj"))
            expected = residual if is_residual else initializer_range
            seen["residual" if is_residual else "other"] += 1
            assert abs(w.mean().item()) < 0.2 * expected, name
            assert w.std().item() == pytest.approx(expected, rel=0.1), name
            if getattr(module, "bias", None) is not None:
                assert torch.count_nonzero(module.bias) == 0, f"{name}.bias"
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            assert torch.all(module.weight == 1), name
            if getattr(module, "bias", None) is not None:
                assert torch.count_nonzero(module.bias) == 0, f"{name}.bias"
    assert seen["residual"] == 2 * n_layers
    assert seen["other"] == 5 * n_layers + 3  # q, k, v, up, gate per layer; embed, pos_embed, head


def test_tied_init_is_the_embedding_init() -> None:
    m = transformer(vocab_size=512, d_model=64, n_layers=2, n_heads=4, initializer_range=0.03)
    assert m.head.weight.std().item() == pytest.approx(0.03, rel=0.1)


# ---------------------------------------------------------------------------------------------------------------
# build_model(ModelConfig)
# ---------------------------------------------------------------------------------------------------------------

SMALL = dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=64)


def test_build_model_dims_follow_config() -> None:
    cfg = ModelConfig(**SMALL, n_kv_heads=2, head_dim=12, mlp_multiple=2.5, vocab_size=None)
    m = build_model(cfg, vocab_size=77)
    assert m.embed.weight.shape == (77, 32) and m.head.weight.shape == (77, 32)
    assert len(m.layers) == 2
    attn, mlp = m.layers[0].attn, m.layers[0].mlp
    assert (attn.n_heads, attn.n_kv_heads, attn.head_dim) == (4, 2, 12)
    assert attn.q_proj.weight.shape == (48, 32)
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (24, 32)
    assert attn.o_proj.weight.shape == (32, 48)
    assert mlp.up_proj.weight.shape == mlp.gate_proj.weight.shape == (80, 32)  # round(2.5 * 32)
    assert mlp.down_proj.weight.shape == (32, 80)
    assert attn.rope is not None and attn.rope(64)[0].shape == (64, 12)
    assert m(torch.randint(0, 77, (1, 5))).shape == (1, 5, 77)


def test_build_model_defaults() -> None:
    m = build_model(ModelConfig(**SMALL))
    attn, mlp = m.layers[0].attn, m.layers[0].mlp
    assert (attn.n_kv_heads, attn.head_dim) == (4, 8)
    assert mlp.up_proj.weight.shape == (128, 32)  # mlp_multiple defaults to 4
    assert m.embed.weight.shape == (50257, 32)  # no vocab anywhere: GPT-2's
    assert m.head.weight is m.embed.weight and attn.causal and isinstance(m.norm, RMSNorm)


def test_build_model_vocab_and_d_ff_precedence() -> None:
    m = build_model(ModelConfig(**SMALL, vocab_size=99, d_ff=40, mlp_multiple=8.0), vocab_size=77)
    assert m.embed.weight.shape == (99, 32)  # the config's vocab_size wins over the tokenizer's
    assert m.layers[0].mlp.up_proj.weight.shape == (40, 32)  # d_ff wins over mlp_multiple


def test_build_model_passes_every_setting() -> None:
    cfg = ModelConfig(
        **SMALL,
        ffn_activation="gelu",
        norm_type="layernorm",
        norm_eps=1e-3,
        dropout=0.1,
        attention_dropout=0.2,
        use_rope=False,
        rope_theta=500.0,
        tie_embeddings=False,
        bias=True,
        attention_mode="bidirectional",
        initializer_range=0.05,
    )
    args = model_arguments(cfg, vocab_size=50)
    assert args == dict(
        vocab_size=50,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=4,
        head_dim=8,
        d_ff=128,
        activation="gelu",
        norm="layernorm",
        norm_eps=1e-3,
        dropout=0.1,
        attention_dropout=0.2,
        max_seq_len=64,
        use_rope=False,
        rope_theta=500.0,
        tie_embeddings=False,
        bias=True,
        causal=False,
        initializer_range=0.05,
    )
    m = build_model(cfg, vocab_size=50)
    layer = m.layers[0]
    assert layer.mlp.gate_proj is None and layer.attn.q_proj.bias is not None
    assert isinstance(m.norm, nn.LayerNorm) and m.norm.eps == 1e-3
    assert m.pos_embed is not None and layer.attn.rope is None and not layer.attn.causal
    assert layer.dropout.p == 0.1 and layer.attn.dropout == 0.2
    assert m.head.weight is not m.embed.weight
    assert m.embed.weight.std().item() == pytest.approx(0.05, rel=0.1)


def test_build_model_rope_theta() -> None:
    m = build_model(ModelConfig(**SMALL, rope_theta=500.0))
    cos, _ = m.layers[0].attn.rope(3)
    expected = torch.cos(2 * 500.0 ** (-torch.arange(4, dtype=torch.float64) * 2 / 8))
    torch.testing.assert_close(cos[2, :4].double(), expected, **F64)


def test_build_model_accepts_the_plain_gqa_attention_type() -> None:
    m = build_model(ModelConfig(**SMALL, attention_type="gqa", n_kv_heads=2), vocab_size=50)
    assert m.layers[0].attn.n_kv_heads == 2
