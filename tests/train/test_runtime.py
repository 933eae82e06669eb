"""Device and precision choices: what `auto` means on this machine, which precisions get a grad scaler, and
the errors for a device that is not here."""

from __future__ import annotations

import pytest
import torch

from stackwise.train.runtime import (
    DeviceError,
    Numerics,
    mps_available,
    numerics,
    pick_device,
    resolve_precision,
)

CPU = torch.device("cpu")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def test_auto_precision_on_the_cpu_is_fp32():
    assert resolve_precision("auto", CPU) == "fp32"
    for explicit in ("fp32", "fp16", "bf16"):
        assert resolve_precision(explicit, CPU) == explicit


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)]
)
def test_numerics_dtype(precision, dtype):
    assert Numerics(CPU, precision).dtype == dtype


def test_only_fp16_gets_a_grad_scaler():
    scaler = Numerics(CPU, "fp16").grad_scaler()
    assert isinstance(scaler, torch.amp.GradScaler)
    assert scaler.is_enabled()
    assert Numerics(CPU, "bf16").grad_scaler() is None
    assert Numerics(CPU, "fp32").grad_scaler() is None


def test_autocast_is_a_no_op_in_fp32_and_casts_in_bf16():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with Numerics(CPU, "fp32").autocast():
        assert (a @ b).dtype == torch.float32
        assert not torch.is_autocast_enabled("cpu")
    with Numerics(CPU, "bf16").autocast():
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32  # and off again afterwards


@no_cuda
def test_cuda_is_refused_without_cuda():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(DeviceError, match="CUDA"):
        pick_device("cuda:1")


@pytest.mark.skipif(torch.cuda.is_available() or mps_available(), reason="an accelerator is available here")
def test_auto_device_is_the_cpu_here():
    assert pick_device("auto") == CPU
    n = numerics("auto", "auto")
    assert n == Numerics(CPU, "fp32")
    assert n.describe() == "cpu, fp32"


def test_an_explicit_cpu():
    assert pick_device("cpu") == CPU


@pytest.mark.skipif(mps_available(), reason="MPS is available here")
def test_mps_is_refused_without_mps():
    with pytest.raises(DeviceError, match="mps"):
        pick_device("mps")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_devices_is_refused():
    with pytest.raises(DeviceError, match="CUDA device"):
        pick_device(f"cuda:{torch.cuda.device_count()}")


def test_mps_precision_choices(monkeypatch: pytest.MonkeyPatch):
    # Selection logic only (no MPS hardware here): auto is fp32 on MPS, fp16 gets a scaler, bf16 needs macOS 14.
    from stackwise.train.runtime import resolve_precision

    mps = torch.device("mps")
    assert resolve_precision("auto", mps) == "fp32"
    assert Numerics(mps, "fp16").grad_scaler() is not None
    assert Numerics(mps, "bf16").grad_scaler() is None
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: major <= 13)
    with pytest.raises(DeviceError, match="macOS 14"):
        resolve_precision("bf16", mps)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: True)
    assert resolve_precision("bf16", mps) == "bf16"
