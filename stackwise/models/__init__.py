"""Model builders: transformer layers (MHA/GQA, RoPE, RMSNorm/LayerNorm, GELU/SwiGLU) and Hugging Face interchange.

Modules take plain arguments (`d_model=768`), never a config object; `builders.build_model` is the one
place that reads a `ModelConfig`. Importing this package imports torch (the config package never does).
"""

from .builders import UnsupportedModelError, build_model, model_arguments
from .hf import UnsupportedArchitectureError, from_hf, to_hf
from .transformer import Transformer, TransformerLayer, transformer

__all__ = [
    "Transformer",
    "TransformerLayer",
    "UnsupportedArchitectureError",
    "UnsupportedModelError",
    "build_model",
    "from_hf",
    "model_arguments",
    "to_hf",
    "transformer",
]
