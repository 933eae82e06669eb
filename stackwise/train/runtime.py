"""Device and numeric precision: which device `auto` means, which autocast dtype, and when a grad scaler runs.

Choices are made once and said in one log line by the trainer. `auto` device is CUDA, then Apple MPS, then
the CPU; `auto` precision is bf16 on a CUDA GPU that supports it and fp32 elsewhere (CPU bf16 autocast is
slower than fp32 on most CPUs, and MPS autocast support varies by macOS version, so neither is a default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class DeviceError(RuntimeError):
    """The configured device or precision is not available on this machine."""


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(spec: str) -> torch.device:
    """`auto` -> cuda, then mps, then cpu; an explicit device must exist here."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"training.device is {spec}, but CUDA is not available here; use `auto` or `cpu`")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"training.device is {spec}, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and not mps_available():
        raise DeviceError("training.device is mps, but Apple MPS is not available here; use `auto` or `cpu`")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision actually used: `auto` resolved, and bf16 refused where the device cannot run it."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("training.precision bf16 needs an Ampere or newer GPU; use fp16 (with a grad scaler)")
    if precision == "bf16" and device.type == "mps" and not torch.backends.mps.is_macos_or_newer(14, 0):
        raise DeviceError("training.precision bf16 on Apple MPS needs macOS 14 or newer; use fp16 or fp32")
    return precision


@dataclass(frozen=True)
class Numerics:
    """Where and how the model computes: device, autocast dtype, and whether gradients are scaled."""

    device: torch.device
    precision: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed-precision region for forward passes (a no-op in fp32)."""
        if self.precision == "fp32":
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 only: bf16 has fp32's exponent range and needs none."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return f"{name}, {self.precision}"


def numerics(device: str, precision: str, tf32: bool = False) -> Numerics:
    """Pick the device and precision for a run (and set TF32 matmuls when asked)."""
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return Numerics(dev, resolve_precision(precision, dev))
