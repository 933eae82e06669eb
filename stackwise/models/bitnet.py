"""BitNet b1.58 as transforms over a built model: ternary BitLinear layers and SubLN.

BitLinear (Ma et al., 2024): weights are quantized to {-1, 0, 1} times their absmean scale; inputs to 8 bits
per token (absmax); the backward pass goes straight through both quantizers (the straight-through estimator),
so the full-precision weights keep learning. SubLN adds an RMSNorm before the attention output and MLP down
projections. Both swap layers in place rather than defining a parallel model class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm


def ternary(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """round(W / mean|W|) clipped to {-1, 0, 1}, times mean|W| (absmean quantization)."""
    scale = weight.abs().mean().clamp(min=eps)
    return (weight / scale).round().clamp(-1, 1) * scale


def quantize_activations(x: torch.Tensor, bits: int = 8, per_token: bool = True, eps: float = 1e-5) -> torch.Tensor:
    """Symmetric absmax quantization to `bits` bits, per token (last dim) or per tensor."""
    top = 2 ** (bits - 1) - 1
    absmax = x.abs().amax(dim=-1, keepdim=True) if per_token else x.abs().amax()
    scale = top / absmax.clamp(min=eps)
    return (x * scale).round().clamp(-top - 1, top) / scale


class BitLinear(nn.Linear):
    """nn.Linear with ternary weights and quantized inputs in the forward pass, full precision in the backward."""

    activation_bits: int = 8
    per_token: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight + (ternary(self.weight) - self.weight).detach()  # straight-through
        xq = x + (quantize_activations(x, self.activation_bits, self.per_token) - x).detach()
        return F.linear(xq, w, self.bias)


def to_bitnet(model: nn.Module, activation_bits: int = 8, per_token: bool = True) -> nn.Module:
    """Turn every linear layer inside `model.layers` into a BitLinear (embeddings and head stay full precision)."""
    for layer in model.layers:
        for module in layer.modules():
            if type(module) is nn.Linear:
                module.__class__ = BitLinear  # same parameters, new forward: swapped in place
                module.activation_bits, module.per_token = activation_bits, per_token
    model.arch["bitnet"] = {"activation_bits": activation_bits, "per_token": per_token}
    return model


def insert_subln(model: nn.Module, eps: float = 1e-5, elementwise_affine: bool = True) -> nn.Module:
    """Add an RMSNorm before each attention output projection and each MLP down projection."""
    for layer in model.layers:
        for parent, name in ((layer.attn, "o_proj"), (layer.mlp, "down_proj")):
            proj = getattr(parent, name)
            norm = RMSNorm(proj.in_features, eps)
            norm.weight.requires_grad_(elementwise_affine)
            setattr(parent, name, nn.Sequential(norm, proj))
    model.arch["subln"] = {"eps": eps, "elementwise_affine": elementwise_affine}
    return model
