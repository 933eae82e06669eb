"""Token embeddings initialised from a pretrained model (`model.tokenizer_embedding`).

The pretrained matrix (input embeddings, or the LM head with `embedding_option: lm_head`) is copied into
the token embedding; when its width differs from d_model, an adapter maps it to d_model: one linear layer,
or an MLP with `adapter_hidden_dim` hidden units. The model is read from a local directory (`path`) or the
Hugging Face cache, never downloaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config.model import TokenizerEmbeddingConfig
from ..config.tokenizers import FAMILY_MODELS


class PretrainedEmbeddingError(ValueError):
    """The pretrained embeddings cannot be found or do not fit the model."""


class AdaptedEmbedding(nn.Module):
    """nn.Embedding of the pretrained width followed by an adapter to d_model."""

    def __init__(self, vocab_size: int, width: int, d_model: int, hidden: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, width)
        if hidden:
            self.adapter: nn.Module = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        else:
            self.adapter = nn.Linear(width, d_model)

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.embedding(input_ids))


def use_pretrained_width(model: nn.Module, width: int, d_model: int, hidden: int | None) -> None:
    """Swap the token embedding for one of the pretrained width with an adapter (when the widths differ)."""
    if width == d_model:
        return
    if model.head.weight is model.embed.weight:
        raise PretrainedEmbeddingError(
            f"tie_embeddings needs the embedding width ({width}) to equal d_model ({d_model}); set tie_embeddings: false"
        )
    model.embed = AdaptedEmbedding(model.embed.num_embeddings, width, d_model, hidden)


@torch.no_grad()
def load_pretrained_embeddings(model: nn.Module, spec: TokenizerEmbeddingConfig) -> None:
    """Copy the pretrained matrix into the token embedding (rows beyond the pretrained vocabulary keep their init)."""
    source = _pretrained_matrix(spec)
    target = model.embed.weight
    if source.shape[1] != target.shape[1]:
        raise PretrainedEmbeddingError(
            f"pretrained width {source.shape[1]} does not match the embedding ({target.shape[1]})"
        )
    if source.shape[0] > target.shape[0]:
        raise PretrainedEmbeddingError(
            f"the pretrained vocabulary ({source.shape[0]}) is larger than vocab_size ({target.shape[0]})"
        )
    target[: source.shape[0]].copy_(source)
    if spec.freeze_embeddings:
        target.requires_grad_(False)


def _pretrained_matrix(spec: TokenizerEmbeddingConfig) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    name = spec.path or FAMILY_MODELS[spec.family]
    try:
        hf: Any = AutoModelForCausalLM.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PretrainedEmbeddingError(
            f"cannot load `{name}` for model.tokenizer_embedding from a local path or the Hugging Face cache: {exc}"
        ) from exc
    module = hf.get_output_embeddings() if spec.embedding_option == "lm_head" else hf.get_input_embeddings()
    return module.weight.detach().float()
