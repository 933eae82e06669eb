"""Frozen low-precision linear layers (QLoRA trunks): nf4/fp4 via bitsandbytes, fp8, fp16, or frozen fp32.

`quantize_linears` swaps every `nn.Linear` of a module for a `QuantizedLinear` in place (the base of a
`LoRALinear` too, keeping its adapters). A `QuantizedLinear` has no trainable parameters and its state dict is
in logical form: `weight` is the dequantized fp32 weight, and loading one quantizes it again. A checkpoint of a
quantized model is therefore a plain fp32 state dict that any unquantized model can load.

Re-quantizing a dequantized weight gives back the same 4-bit codes (nf4 bit for bit; fp4 up to the sign of
zero, whose two codes dequantize alike) and the same fp8 storage. With `double_quant` (QLoRA's default) the
per-block absmax statistics are themselves 8-bit quantized around their mean, and that step is not
idempotent: each save/load cycle moves the dequantized weights by about 1e-3 of their scale. Use
`double_quant=False` where a resumed run must match an uninterrupted one exactly.

The 4-bit storage is bitsandbytes' `Params4bit` (packed uint8 codes plus a QuantState). Its `Linear4bit.forward`
is not used: on CPUs with AVX512-BF16 its inference path repacks the weight in place into a CPU layout with
bf16 absmax (lossy, and it asserts out_features % 32 == 0), and it casts the bias in place to the compute
dtype. `bnb.matmul_4bit`, which that forward calls otherwise, is called directly. On CPU, where bitsandbytes
0.50's dequantize kernel gets rows that are not whole 64-weight blocks wrong, both dequantization and the
product go through `_dequantize_4bit_flat`, a PyTorch reading of the same format.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .bitnet import BitLinear

KINDS = ("nf4", "fp4", "fp8", "fp16", "fp32")
FP8_MAX = 448.0  # largest finite float8_e4m3fn
_STORAGE = {"fp8": torch.float8_e4m3fn, "fp16": torch.float16, "fp32": torch.float32}
_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32}


def _bitsandbytes() -> Any:
    # On CPUs with AVX512-BF16, importing bitsandbytes without the `kernels` package logs that it could not fetch
    # a hub kernel for the repacked CPU path; that path is never used here (see above), so the line is noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError as err:
        raise ImportError("4-bit trunks (nf4/fp4) need bitsandbytes: pip install bitsandbytes") from err
    return bitsandbytes


class QuantizedLinear(nn.Module):
    """A frozen linear layer whose weight is stored as `kind`; forward computes `F.linear(x, W, b)`."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        kind: str,
        compute_dtype: torch.dtype = torch.float32,
        double_quant: bool = True,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown quantization kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.compute_dtype = compute_dtype  # 4-bit only: the dtype bitsandbytes multiplies in
        self.double_quant = double_quant  # 4-bit only: quantize the absmax statistics too (QLoRA)
        self.out_features, self.in_features = weight.shape
        self.weight: nn.Parameter
        self.weight_scale: torch.Tensor | None
        self.register_buffer("weight_scale", None, persistent=False)  # fp8: per-output-row scale, (out, 1)
        self.requantize(weight)
        self.bias: nn.Parameter | None
        self.register_parameter("bias", None if bias is None else nn.Parameter(bias.detach().float().clone(), False))

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, kind: str, compute_dtype: torch.dtype = torch.float32, double_quant: bool = True
    ) -> QuantizedLinear:
        """The quantized counterpart of `linear` (its weight and bias are read, not modified)."""
        if isinstance(linear, BitLinear):
            raise ValueError("quantizing BitNet layers is not supported: their weights are already ternary")
        return cls(linear.weight.detach(), linear.bias, kind, compute_dtype, double_quant)

    @property
    def is_4bit(self) -> bool:
        return self.kind in ("nf4", "fp4")

    def requantize(self, weight: torch.Tensor) -> None:
        """Store `weight` (out, in) in this layer's format, on the device of the current storage."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(
                f"weight of shape {tuple(weight.shape)} for a {self.out_features}x{self.in_features} layer"
            )
        old = self._parameters.get("weight")
        device = weight.device if old is None else old.device
        w = weight.detach().to(device=device, dtype=torch.float32).contiguous()
        if self.is_4bit:
            bnb = _bitsandbytes()
            packed = bnb.nn.Params4bit(
                w, requires_grad=False, compress_statistics=self.double_quant, quant_type=self.kind
            )
            self.weight = packed.to(device)  # Params4bit quantizes on its first move to a device
        elif self.kind == "fp8":
            scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)  # (out, 1)
            # the clamp keeps a rounding of rowmax/scale just above 448 from becoming NaN (e4m3fn has no inf)
            codes = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            self.weight = nn.Parameter(codes, requires_grad=False)
            self.weight_scale = scale
        else:
            # a copy, so that the frozen storage never aliases the caller's tensor (a linear, a state dict)
            self.weight = nn.Parameter(w.to(_STORAGE[self.kind], copy=True), requires_grad=False)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight this layer computes with, (out, in) fp32."""
        if self.is_4bit:
            if self._bnb_cpu_kernel_is_wrong():
                return _dequantize_4bit_flat(self.weight)
            return _bitsandbytes().functional.dequantize_4bit(self.weight.data, self.weight.quant_state).float()
        if self.kind == "fp8":
            return self.weight.detach().float() * self.weight_scale
        return self.weight.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # frozen by construction: weight and bias are read detached, whatever requires_grad says
        bias = None if self.bias is None else self.bias.detach()
        if self.is_4bit:
            xc = x.to(self.compute_dtype)
            bias = None if bias is None else bias.to(self.compute_dtype)
            if self._bnb_cpu_kernel_is_wrong():
                out = F.linear(xc, self.dequantized_weight().to(self.compute_dtype), bias)
            else:
                out = _bitsandbytes().matmul_4bit(xc, self.weight, quant_state=self.weight.quant_state, bias=bias)
            # under autocast the product is already in the autocast dtype, as an nn.Linear's would be
            return out if torch.is_autocast_enabled(x.device.type) else out.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), bias)

    def _bnb_cpu_kernel_is_wrong(self) -> bool:
        # bitsandbytes 0.50's CPU dequantize kernel (used by matmul_4bit too) starts a new block at every row,
        # while quantize_4bit runs blocks on across rows: the two agree only when rows hold whole blocks
        return self.weight.device.type == "cpu" and self.in_features % self.weight.quant_state.blocksize != 0

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}, bias={self.bias is not None}"

    def _apply(self, fn: Any, recurse: bool = True) -> QuantizedLinear:
        # `module.to(torch.bfloat16)` / `.half()` must move a storage format, not re-round it: the fp8/fp16/fp32
        # storage and the fp8 scales travel as same-width integers, which dtype conversions leave alone.
        names = [n for n in ("weight", "weight_scale") if not self.is_4bit and getattr(self, n) is not None]
        dtypes = {n: getattr(self, n).dtype for n in names}
        for n in names:
            getattr(self, n).data = getattr(self, n).data.view(_SAME_WIDTH_INT[getattr(self, n).element_size()])
        try:
            super()._apply(fn, recurse)
        finally:
            for n in names:
                getattr(self, n).data = getattr(self, n).data.view(dtypes[n])
        return self

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.dequantized_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        for hook in self._load_state_dict_pre_hooks.values():  # as nn.Module's own loader does
            hook(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        expected = {"weight": (self.out_features, self.in_features)}
        if self.bias is not None:
            expected["bias"] = (self.out_features,)
        for name, shape in expected.items():
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
            elif tuple(state_dict[key].shape) != shape:
                error_msgs.append(f"size mismatch for {key}: copying {tuple(state_dict[key].shape)}, expected {shape}")
            elif name == "weight":
                self.requantize(state_dict[key])
            else:
                with torch.no_grad():
                    self.bias.copy_(state_dict[key])
        if strict:
            own = {prefix + name for name in expected}
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k not in own)


def _dequantize_4bit_flat(weight: Any) -> torch.Tensor:
    """Dequantize a bitsandbytes Params4bit in PyTorch: code value times the absmax of its block, blocks of
    `blocksize` consecutive weights in row-major order (bitsandbytes' own format, as quantize_4bit writes it)."""
    bnb = _bitsandbytes()
    state = weight.quant_state
    absmax = state.absmax
    if state.nested:  # double quantization: the absmaxes are 8-bit codes around their mean
        absmax = bnb.functional.dequantize_blockwise(state.absmax, state.state2) + state.offset
    n = state.shape[0] * state.shape[1]
    packed = weight.data.view(torch.uint8).reshape(-1)  # two codes a byte, the first in the high nibble
    codes = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)[:n].long()  # (n,)
    values = F.pad(state.code.to(packed.device)[codes].float(), (0, absmax.numel() * state.blocksize - n))
    values = values.view(-1, state.blocksize) * absmax.float().view(-1, 1)  # (blocks, blocksize)
    return values.reshape(-1)[:n].view(state.shape[0], state.shape[1])  # (out, in)


def quantize_linears(
    module: nn.Module, kind: str, compute_dtype: torch.dtype = torch.float32, double_quant: bool = True
) -> int:
    """Replace every `nn.Linear` inside `module` (and the base of every `LoRALinear`) by a `QuantizedLinear`.

    In place; layers already quantized are left alone. Returns the number of layers quantized. Raises
    ValueError on BitNet layers, before changing anything.
    """
    from .adapters import LoRALinear  # adapters imports this module

    if kind not in KINDS:
        raise ValueError(f"unknown quantization kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(module, (nn.Linear, QuantizedLinear, LoRALinear)):
        raise TypeError("quantize_linears changes layers inside a module; use QuantizedLinear.from_linear(layer)")
    targets: list[tuple[nn.Module, str, nn.Linear]] = []
    stack = [module]
    while stack:
        parent = stack.pop()
        for name, child in parent.named_children():
            owner = parent
            if isinstance(child, LoRALinear):  # quantize its base, keep its adapters; nothing else inside
                owner, name, child = child, "base", child.base
            if isinstance(child, BitLinear):
                raise ValueError("quantizing BitNet layers is not supported: their weights are already ternary")
            if isinstance(child, nn.Linear):
                targets.append((owner, name, child))
            elif owner is parent and not isinstance(child, QuantizedLinear):
                stack.append(child)
    for parent, name, linear in targets:
        setattr(parent, name, QuantizedLinear.from_linear(linear, kind, compute_dtype, double_quant))
    return len(targets)


def is_4bit(module: nn.Module) -> bool:
    """Whether `module` is or contains a 4-bit (nf4/fp4) QuantizedLinear."""
    return any(isinstance(m, QuantizedLinear) and m.is_4bit for m in module.modules())
