"""Model builders: transformer layers (MHA/GQA, RoPE, RMSNorm/LayerNorm, GELU/SwiGLU) and Hugging Face interchange.

Modules take plain arguments (`d_model=768`), never a config object; `builders.build_model` is the one
place that reads a `ModelConfig`. Names are imported lazily, so `stackwise.models.summary` (pure arithmetic)
works without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Transformer": "network",
    "TransformerLayer": "network",
    "transformer": "network",
    "UnsupportedModelError": "builders",
    "build_model": "builders",
    "model_arguments": "builders",
    "UnsupportedArchitectureError": "hf",
    "from_hf": "hf",
    "to_hf": "hf",
    "summarize": "summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
