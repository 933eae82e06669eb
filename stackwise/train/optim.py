"""Optimisers and the learning-rate schedule.

- `adamw`: decoupled weight decay on weight matrices only; norms, biases and embeddings are not decayed.
  The fused CUDA implementation is used on GPUs.
- `muon`: `torch.optim.Muon` (orthogonalised momentum, Newton-Schulz) for the hidden matrices (the
  `nn.Linear` weights inside the transformer layers); AdamW for everything else (embeddings, the output
  head, norms, biases, expert tables), as Muon's authors prescribe. Muon's update is rescaled to AdamW's
  RMS (`adjust_lr_fn="match_rms_adamw"`), so one `learning_rate` serves both.
- `adamw_8bit`: bitsandbytes' AdamW8bit (8-bit optimizer state), same parameter groups as AdamW.

Every parameter group records its peak learning rate (`peak_lr`); `set_lr` scales all groups by the
schedule's factor at a step, so groups with their own peak (a stage's adapters) follow the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn


class OptimizerError(RuntimeError):
    """The configured optimizer cannot run here (e.g. bitsandbytes missing)."""


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or name.startswith(("embed.", "pos_embed.")) or ".embed." in name


def split_decay(named: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) trainable parameters; a parameter shared by two names (tied head) appears once."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if _no_decay(name, p) else decay).append(p)
    return decay, no_decay


def hidden_matrices(model: nn.Module) -> set[int]:
    """ids of the weights Muon updates: nn.Linear weights inside `model.layers` (not embeddings or the head)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        return set()
    return {id(m.weight) for m in layers.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad}


def _groups(params: tuple[list[nn.Parameter], list[nn.Parameter]], lr: float, weight_decay: float) -> list[dict]:
    decay, no_decay = params
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr": lr, "peak_lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr, "peak_lr": lr},
    ]
    return [g for g in groups if g["params"]]


def build_optimizers(
    named: list[tuple[str, nn.Parameter]],
    model: nn.Module,
    *,
    kind: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    momentum: float,
    device: torch.device,
) -> list[torch.optim.Optimizer]:
    """The optimizers over the trainable parameters `named` (one, or Muon + AdamW)."""
    if kind == "muon":
        muon_ids = hidden_matrices(model)
        muon_params = [p for _, p in named if id(p) in muon_ids and p.requires_grad]
        rest = [(n, p) for n, p in named if id(p) not in muon_ids]
        out: list[torch.optim.Optimizer] = []
        if muon_params:
            out.append(
                torch.optim.Muon(
                    [{"params": muon_params, "lr": lr, "peak_lr": lr, "weight_decay": weight_decay}],
                    lr=lr,
                    weight_decay=weight_decay,
                    momentum=momentum,
                    adjust_lr_fn="match_rms_adamw",
                )
            )
        groups = _groups(split_decay(rest), lr, weight_decay)
        if groups:
            out.append(torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda"))
        return out
    groups = _groups(split_decay(named), lr, weight_decay)
    if not groups:
        return []
    if kind == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise OptimizerError("training.optimizer adamw_8bit needs bitsandbytes: pip install bitsandbytes") from err
        return [bnb.optim.AdamW8bit(groups, lr=lr, betas=betas)]
    return [torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")]


def warmup_steps(total: int, steps: int | None, ratio: float | None) -> int:
    """Warmup length: warmup_steps, or warmup_ratio of the total; never the whole run."""
    if steps is not None:
        w = steps
    elif ratio is not None:
        w = round(ratio * total)  # not int(): 0.29 * 100 is 28.999...
    else:
        w = 0
    return min(w, max(total - 1, 0))


def lr_at(step: int, *, total: int, warmup: int, peak: float, floor: float, kind: str, decay_ratio: float) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total`.

    Linear warmup to `peak` over `warmup` steps; then cosine / linear decay reaching `floor` exactly at the last
    step, constant at `peak`, or wsd: `peak` until the final `decay_ratio` of the steps, then linear to `floor`.
    """
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    if kind == "constant":
        return peak
    last = max(total - 1, 1)
    if kind == "wsd":
        decay = max(1, round(decay_ratio * total))
        start = max(warmup, total - decay)
        if step < start:
            return peak
        progress = min(1.0, (step - start + 1) / max(last - start + 1, 1))
        return peak + (floor - peak) * progress
    progress = min(1.0, (step - warmup) / max(last - warmup, 1))
    if kind == "linear":
        return peak + (floor - peak) * progress
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizers: list[torch.optim.Optimizer], factor: float | Callable[[float], float]) -> None:
    """Set every group's lr: its peak times `factor`, or `factor(peak)` (the schedule for that peak)."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = factor(group["peak_lr"]) if callable(factor) else group["peak_lr"] * factor
