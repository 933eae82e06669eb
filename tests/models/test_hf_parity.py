"""stackwise models match Hugging Face `transformers` number for number (fp32, CPU, random weights, tiny dims)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from stackwise.models import UnsupportedArchitectureError, from_hf, to_hf, transformer  # noqa: E402

TOL = 1e-4


def gpt2(**overrides):
    config = transformers.GPT2Config(
        vocab_size=101, n_embd=64, n_layer=2, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0, **overrides
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def llama(**overrides):
    fields = dict(
        vocab_size=101,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rope_theta=500.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).eval()


def deepseek_v3(**overrides):
    fields = dict(
        vocab_size=101,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=24,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=12,
        v_head_dim=10,
        first_k_dense_replace=2,  # dense MLPs in every layer
        max_position_embeddings=32,
        rope_theta=500.0,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    torch.manual_seed(0)
    model = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**fields)).eval()
    with torch.no_grad():  # norms start at 1; perturb them so a swapped or skipped norm shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


CASES = {
    "gpt2": gpt2,
    "llama-gqa": llama,
    "llama-mha-tied": lambda: llama(num_key_value_heads=4, tie_word_embeddings=True),
    "llama-bias-headdim": lambda: llama(attention_bias=True, mlp_bias=True, head_dim=24),
    "deepseek-v3-mla": deepseek_v3,
    "deepseek-v3-mla-no-q-lora": lambda: deepseek_v3(q_lora_rank=None, rope_interleave=False),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def pair(request):
    hf = CASES[request.param]()
    return hf, from_hf(hf).eval()


def ids(seq: int = 19) -> torch.Tensor:
    return torch.randint(0, 101, (2, seq), generator=torch.Generator().manual_seed(1))


def test_logits_match(pair) -> None:
    hf, ours = pair
    x = ids()
    with torch.no_grad():
        assert (ours(x) - hf(x).logits).abs().max().item() <= TOL


def test_gradients_match_for_one_backward_pass(pair) -> None:
    hf, ours = pair
    x, y = ids(), ids().roll(1, dims=1)
    loss_hf = torch.nn.functional.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten())
    loss_ours = torch.nn.functional.cross_entropy(ours(x).flatten(0, 1), y.flatten())
    loss_hf.backward()
    loss_ours.backward()
    assert abs(loss_hf.item() - loss_ours.item()) <= TOL
    # Compare the embedding gradient (it collects every path through the model) and one deep weight.
    hf_embed = hf.get_input_embeddings().weight.grad
    assert (ours.embed.weight.grad - hf_embed).abs().max().item() <= TOL
    hf_last = (
        hf.transformer.h[-1].mlp.c_proj.weight.grad.t()
        if hf.config.model_type == "gpt2"
        else hf.model.layers[-1].mlp.down_proj.weight.grad
    )
    assert (ours.layers[-1].mlp.down_proj.weight.grad - hf_last).abs().max().item() <= TOL


def test_to_hf_round_trips(pair, tmp_path: Path) -> None:
    _, ours = pair
    to_hf(ours, tmp_path / "export")
    assert (tmp_path / "export" / "config.json").is_file()
    assert list((tmp_path / "export").glob("*.safetensors"))
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    x = ids()
    with torch.no_grad():
        assert (back(x).logits - ours(x)).abs().max().item() <= TOL


def test_export_refuses_what_it_cannot_map(tmp_path: Path) -> None:
    bidirectional = transformer(vocab_size=50, d_model=32, n_layers=1, n_heads=4, causal=False)
    with pytest.raises(UnsupportedArchitectureError, match="causal"):
        to_hf(bidirectional, tmp_path / "x")
    gqa_gpt2 = transformer(
        vocab_size=50,
        d_model=32,
        n_layers=1,
        n_heads=4,
        n_kv_heads=2,
        norm="layernorm",
        use_rope=False,
        activation="gelu",
        bias=True,
    )
    with pytest.raises(UnsupportedArchitectureError, match="multi-head"):
        to_hf(gqa_gpt2, tmp_path / "y")
    kernel = transformer(
        vocab_size=50, d_model=32, n_layers=1, n_heads=4, attention="kernel"
    )  # RMSNorm + RoPE, not Llama
    with pytest.raises(UnsupportedArchitectureError, match="kernel"):
        to_hf(kernel, tmp_path / "z")


def test_from_hf_refuses_other_architectures() -> None:
    config = transformers.MistralConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    with pytest.raises(UnsupportedArchitectureError, match="mistral"):
        from_hf(transformers.MistralForCausalLM(config))
