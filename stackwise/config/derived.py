"""Values that follow from several settings: blocks, stacks, the objective, LoRA ranks per stack, mask schedules.

Pure functions of a validated config, shared by the rules, `stackwise plan` and the trainer, so that all
three agree on what a config means.
"""

from __future__ import annotations

import math

from .schema import StackwiseConfig


def blocks(cfg: StackwiseConfig) -> tuple[int, int]:
    """(total_blocks, block_size). Given one, the other is n_layers divided by it; given neither, blocks of one layer."""
    n_layers = cfg.model.n_layers
    total, size = cfg.training.total_blocks, cfg.training.block_size
    if total is None and size is None:
        size = 1
    if size is None:
        size = max(1, n_layers // total) if total else 1
    if total is None:
        total = max(1, n_layers // size)
    return total, size


def objective(cfg: StackwiseConfig) -> str:
    """The training objective: as set, else masked_diffusion with masking or bidirectional attention, else causal."""
    if cfg.training.objective is not None:
        return cfg.training.objective
    if cfg.training.time_step_masking or cfg.model.attention_mode == "bidirectional":
        return "masked_diffusion"
    return "causal"


def pattern_value(base: float, pattern: str, k: int) -> float:
    """Value of a rank/alpha pattern at stack k: constant b; increasing b*2^k; decreasing b/2^k; linear b*(k+1)."""
    if pattern == "increasing":
        return base * 2**k
    if pattern == "decreasing":
        return base / 2**k
    if pattern == "linear":
        return base * (k + 1)
    return float(base)


def stack_lora(cfg: StackwiseConfig, k: int) -> tuple[int, float]:
    """(rank, alpha) of the stack LoRA on stack k, following qlora_strategy."""
    p = cfg.training.progressive
    if p.qlora_strategy == "variable" and p.qlora_configs and k in p.qlora_configs:
        spec = p.qlora_configs[k]
        return spec.rank, spec.alpha
    if p.qlora_strategy == "progressive":
        return int(pattern_value(p.qlora_rank, p.qlora_rank_pattern, k)), pattern_value(
            p.qlora_alpha, p.qlora_alpha_pattern, k
        )
    return p.qlora_rank, p.qlora_alpha


def depth_mask_fractions(cfg: StackwiseConfig, steps: int | None = None) -> tuple[float, ...]:
    """Mask fraction per time step (block k trains at entry k).

    With time_step_masking and explicit fractions, those; otherwise min_mask_fraction to max_mask_fraction
    over `steps` points (default: num_time_steps, else the number of blocks) by mask_schedule_type.
    """
    t = cfg.training
    if t.time_step_masking and t.time_step_mask_fractions:
        return t.time_step_mask_fractions
    n = steps or t.num_time_steps or blocks(cfg)[0]
    lo, hi = t.min_mask_fraction, t.max_mask_fraction
    out = []
    for k in range(n):
        x = k / (n - 1) if n > 1 else 1.0
        if t.mask_schedule_type == "exponential":
            out.append(lo * (hi / lo) ** x)
        elif t.mask_schedule_type == "cosine":
            out.append(lo + (hi - lo) * (1 - math.cos(math.pi * x)) / 2)
        else:
            out.append(lo + (hi - lo) * x)
    return tuple(out)


def tokenizer_name(cfg: StackwiseConfig) -> str:
    """The tokenizer a config trains with: data.tokenizer_path, else the pretrained model's, else GPT-2's."""
    if cfg.data.tokenizer_path:
        return cfg.data.tokenizer_path
    if cfg.model.pretrained_name:
        return cfg.model.pretrained_name
    if cfg.model.tokenizer_embedding is not None:
        return cfg.model.tokenizer_embedding.path or cfg.model.tokenizer_embedding.family
    return "gpt2"
