"""LoRA adapters in plain PyTorch: wrap linear layers in place, train low-rank deltas, merge them back for export.

`LoRALinear` computes `base(x) + sum_a scale_a * (x @ A_a^T) @ B_a^T` with A (rank, in), B (out, rank) and
scale = alpha / rank, initialised as peft does (A kaiming-uniform with a=sqrt(5), B zeros), so a fresh adapter
changes nothing. The base is an `nn.Linear`, a frozen `QuantizedLinear` (QLoRA) or any module with
`in_features`, `out_features` and a forward. Adapter parameters stay fp32; their path runs in the input's
dtype, so it follows autocast. Whether the base trains is the caller's choice: nothing here freezes it.

State dict keys of a wrapped layer: `base.weight`, `base.bias`, `adapters.<name>.A`, `adapters.<name>.B`.
`merge_all` turns every wrapped or quantized layer back into a plain `nn.Linear`, so the keys become those of
an unadapted model again and the model can be exported.

Wrapping a weight shared with another module (a head tied to the embeddings) and merging into it changes
the other module too: attach adapters to `model.layers`, not to a tied head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .bitnet import BitLinear
from .quantize import QuantizedLinear

_BITNET = "LoRA on BitNet layers is not supported: their ternary weights cannot absorb a merged adapter"


class LoRAAdapter(nn.Module):
    """One low-rank delta: `scale * B @ A`, A (rank, in), B (out, rank), both fp32."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, device: torch.device | None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=torch.float32))
        self.B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # peft's default, as nn.Linear initialises its weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = F.linear(x, self.A.to(x.dtype))  # (..., rank)
        return F.linear(down, self.B.to(x.dtype)) * self.scale  # (..., out)

    def delta_weight(self) -> torch.Tensor:
        return (self.B @ self.A) * self.scale  # (out, in)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def _base_weight(base: nn.Module) -> torch.Tensor:
    if isinstance(base, QuantizedLinear):
        return base.dequantized_weight()
    return base.weight.float()


class LoRALinear(nn.Module):
    """A linear layer plus named LoRA adapters, summed."""

    def __init__(self, base: nn.Module):
        super().__init__()
        if isinstance(base, BitLinear):
            raise ValueError(_BITNET)
        self.base = base
        self.in_features: int = base.in_features
        self.out_features: int = base.out_features
        self.adapters = nn.ModuleDict()

    def add_adapter(self, name: str, rank: int, alpha: float) -> None:
        """A fresh adapter (B = 0, so outputs do not change), on the base weight's device."""
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} already exists")
        self.adapters[name] = LoRAAdapter(self.in_features, self.out_features, rank, alpha, self._device())

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise KeyError(f"no adapter {name!r}; adapters: {list(self.adapters)}")
        del self.adapters[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)  # (..., out)
        for adapter in self.adapters.values():
            out = out + adapter(x)
        return out

    def delta_weight(self, name: str | None = None) -> torch.Tensor:
        """scale * B @ A of adapter `name`, or summed over all adapters: (out, in) fp32."""
        if name is not None:
            return self.adapters[name].delta_weight()
        total = torch.zeros(self.out_features, self.in_features, device=self._device())
        for adapter in self.adapters.values():
            total = total + adapter.delta_weight()
        return total

    def merged_weight(self) -> torch.Tensor:
        """The base weight (dequantized when quantized) plus every adapter's delta: (out, in) fp32."""
        return _base_weight(self.base) + self.delta_weight()

    def merge_adapter(self, name: str) -> None:
        """Fold adapter `name` into the base weight (re-quantized when the base is quantized) and remove it."""
        delta = self.adapters[name].delta_weight().detach()
        with torch.no_grad():
            if isinstance(self.base, QuantizedLinear):
                self.base.requantize(self.base.dequantized_weight() + delta)
            else:
                self.base.weight.add_(delta.to(self.base.weight.dtype))
        self.remove_adapter(name)

    def _device(self) -> torch.device:
        weight = getattr(self.base, "weight", None)
        return weight.device if weight is not None else next(self.base.parameters(), torch.empty(0)).device


def _targets(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) for every LoRALinear, nn.Linear and QuantizedLinear below `module`."""
    found, stack = [], [module]
    while stack:
        parent = stack.pop()
        for name, child in parent.named_children():
            if isinstance(child, (LoRALinear, nn.Linear, QuantizedLinear)):
                found.append((parent, name, child))
            else:
                stack.append(child)
    return found


def attach_lora(module: nn.Module, name: str, rank: int, alpha: float) -> int:
    """Give every linear layer inside `module` an adapter `name`; returns the number of parameters added.

    Plain and quantized linears are wrapped in a LoRALinear; an existing LoRALinear gets one more adapter.
    Raises ValueError on BitNet layers, before changing anything.
    """
    if isinstance(module, LoRALinear):
        targets: list[tuple[nn.Module | None, str, nn.Module]] = [(None, "", module)]
    elif isinstance(module, (nn.Linear, QuantizedLinear)):
        raise TypeError("attach_lora changes layers inside a module; wrap a single layer with LoRALinear(layer)")
    else:
        targets = _targets(module)
    if any(isinstance(layer, BitLinear) for _, _, layer in targets):
        raise ValueError(_BITNET)
    if any(isinstance(layer, LoRALinear) and name in layer.adapters for _, _, layer in targets):
        raise ValueError(f"adapter {name!r} already exists")
    added = 0
    for parent, attr, layer in targets:
        if not isinstance(layer, LoRALinear):
            layer = LoRALinear(layer)
            setattr(parent, attr, layer)
        layer.add_adapter(name, rank, alpha)
        added += sum(p.numel() for p in layer.adapters[name].parameters())
    return added


def merge_all(module: nn.Module) -> nn.Module:
    """Replace every LoRALinear and QuantizedLinear inside `module` by a plain fp32 `nn.Linear` (in place).

    The new weight is the merged weight (dequantized base plus every adapter's delta), the bias is kept, and
    both require grad. Returns `module`, or its replacement when `module` itself is such a layer.
    """
    if isinstance(module, (LoRALinear, QuantizedLinear)):
        return _merged_linear(module)
    for parent, attr, layer in _targets(module):
        if isinstance(layer, (LoRALinear, QuantizedLinear)):
            setattr(parent, attr, _merged_linear(layer))
    return module


def _merged_linear(layer: LoRALinear | QuantizedLinear) -> nn.Linear:
    with torch.no_grad():
        weight = layer.merged_weight() if isinstance(layer, LoRALinear) else layer.dequantized_weight()
        bias = getattr(layer.base if isinstance(layer, LoRALinear) else layer, "bias", None)
        linear = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.detach().float().clone())  # (out, in)
        if bias is not None:
            linear.bias = nn.Parameter(bias.detach().float().clone())
    return linear


def adapter_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) for every adapter parameter inside `module`, named as `module.named_parameters()` does."""
    return [
        (f"{prefix}.{name}" if prefix else name, param)
        for prefix, sub in module.named_modules()
        if isinstance(sub, LoRAAdapter)
        for name, param in sub.named_parameters(recurse=False)
    ]
