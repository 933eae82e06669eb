"""`model.tokenizer_embedding`: token embeddings copied from a pretrained model saved locally by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from stackwise.config import StackwiseConfig, load_mapping  # noqa: E402
from stackwise.models import build_model  # noqa: E402
from stackwise.models.pretrained import AdaptedEmbedding, PretrainedEmbeddingError  # noqa: E402
from stackwise.models.summary import summarize  # noqa: E402


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A tiny GPT-2 written with save_pretrained: (directory, its input embedding matrix)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=60, n_embd=48, n_layer=1, n_head=4, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    return path, model.transformer.wte.weight.detach().clone()


def config(path: Path, **model) -> StackwiseConfig:
    te = {"family": "gpt2", "path": str(path), **model.pop("te", {})}
    return StackwiseConfig.from_dict(
        {"model": {"n_layers": 1, "n_heads": 4, "vocab_size": 64, "tokenizer_embedding": te, **model}}
    )


def test_same_width_copies_the_matrix_and_freezes(pretrained) -> None:
    path, wte = pretrained
    cfg = config(path, d_model=48, te={"freeze_embeddings": True})
    model = build_model(cfg.model)
    torch.testing.assert_close(model.embed.weight[:60], wte)
    assert not model.embed.weight.requires_grad
    s = summarize(cfg)
    assert s.total == sum(p.numel() for p in model.parameters())
    assert s.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_other_width_gets_an_adapter(pretrained) -> None:
    path, wte = pretrained
    cfg = config(path, d_model=64, tie_embeddings=False, te={"adapter_hidden_dim": 32})
    model = build_model(cfg.model)
    assert isinstance(model.embed, AdaptedEmbedding)
    torch.testing.assert_close(model.embed.weight[:60], wte)
    assert model(torch.randint(0, 64, (2, 5))).shape == (2, 5, 64)
    assert summarize(cfg).total == sum(p.numel() for p in model.parameters())


def test_lm_head_option_reads_the_output_embeddings(pretrained) -> None:
    path, wte = pretrained  # GPT-2 ties its head to wte
    model = build_model(config(path, d_model=48, te={"embedding_option": "lm_head"}).model)
    torch.testing.assert_close(model.embed.weight[:60], wte)


def test_tied_head_with_another_width_is_a_config_error(pretrained) -> None:
    path, _ = pretrained
    result = load_mapping(
        {"model": {"d_model": 64, "n_heads": 4, "tokenizer_embedding": {"family": "gpt2", "path": str(path)}}}
    )
    assert [i.path for i in result.errors] == ["model.tie_embeddings"]
    assert "set tie_embeddings: false" in result.errors[0].message


def test_missing_pretrained_model_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"n_embd": 48}')
    with pytest.raises(PretrainedEmbeddingError, match="cannot load"):
        build_model(config(tmp_path, d_model=48).model)
