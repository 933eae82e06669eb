"""Which implementation runs an op, the PyTorch reference or Triton: decided once per op, device and dtype.

`auto` takes Triton on a CUDA GPU, in fp16 or bf16, when the package imports and the op can run the call;
everything else runs the PyTorch reference. `triton` is honoured or refused with an error that says why:
no Triton package, a device Triton does not compile for (the CPU only under `TRITON_INTERPRET=1`, the
interpreter, which tests use; never Apple MPS), or a call the kernel cannot do. The choice is logged once.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os

import torch

log = logging.getLogger("stackwise.kernels")

CHOICES = ("auto", "torch", "triton")
FAST_DTYPES = (torch.float16, torch.bfloat16)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_logged: set[tuple] = set()


class KernelUnavailableError(RuntimeError):
    """A Triton kernel was asked for (`triton`) where it cannot run."""


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True under `TRITON_INTERPRET=1`: kernels run on the CPU through Triton's interpreter (slow; for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def why_not_triton(device: torch.device, dtype: torch.dtype, limit: str | None = None) -> str | None:
    """Why a Triton kernel cannot run here (None: it can). `limit`: the op's own reason for this call."""
    if not triton_installed():
        return "the triton package is not installed (it comes with PyTorch's CUDA builds on Linux)"
    if device.type == "cpu" and not interpreting():
        return "Triton kernels run on CUDA GPUs; on the CPU only under TRITON_INTERPRET=1 (the interpreter, for tests)"
    if device.type not in ("cuda", "cpu"):
        return f"Triton does not compile for {device.type} devices"
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        return "the Triton kernels need an NVIDIA GPU of compute capability 8.0 (Ampere) or newer"
    if dtype not in KERNEL_DTYPES:
        return f"the kernels take fp16, bf16 or fp32 tensors, not {dtype}"
    return limit


def select(
    op: str, choice: str, device: torch.device, dtype: torch.dtype, *, limit: str | None = None, setting: str = ""
) -> str:
    """`torch` or `triton` for one call of `op`. `setting` names the config key in errors."""
    if choice not in CHOICES:
        raise ValueError(f"{setting or op}: unknown kernel choice {choice!r}; expected auto, torch or triton")
    reason = why_not_triton(device, dtype, limit) if choice != "torch" else None
    if choice == "triton" and reason is not None:
        raise KernelUnavailableError(f"{setting or op} is triton, but {reason}; use auto or torch")
    if choice == "auto":
        fast = device.type == "cuda" and dtype in FAST_DTYPES
        impl = "triton" if fast and reason is None else "torch"
    else:
        impl = choice
    key = (op, device.type, dtype, choice, impl)
    if key not in _logged:
        _logged.add(key)
        log.info("%s on %s %s: %s (%s)", op, device.type, str(dtype).removeprefix("torch."), impl, choice)
    return impl


def launch_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensor's own (cuda:1 while cuda:0 is current)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
