"""Compute kernels: a plain-PyTorch reference for every op, a Triton implementation, and the dispatch between them.

Importing this package never imports Triton; a Triton module loads on first use of the `triton` path.
"""

from .attention import attention, attention_reference
from .dispatch import KernelUnavailableError, interpreting, select, why_not_triton

__all__ = [
    "KernelUnavailableError",
    "attention",
    "attention_reference",
    "interpreting",
    "select",
    "why_not_triton",
]
