"""What a config's stage schedule will do, as a table (`stackwise plan`, and the start of `stackwise train`).

The trainable parameter count of each stage is measured, not estimated: the model is built on the meta device
(no memory, no weights), arranged by a `Rack` for each stage, and the parameters left with `requires_grad`
are counted. Quantization is skipped on the meta device; it changes no trainable count.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import derived
from ..config.schema import StackwiseConfig
from . import stages as schedule
from .rack import Rack, trainable_count


def plan_for(cfg: StackwiseConfig) -> tuple[list[schedule.Stage], list[dict[str, Any]]]:
    """The stage schedule of a config and its table; reads the data only when epochs set the length."""
    from .packing import build_data
    from .tokenizer import load_tokenizer
    from .trainer import TrainingError, needs_epoch_length, steps_per_epoch

    t, vocab, per_epoch = cfg.training, cfg.model.vocab_size, None
    if vocab is None or needs_epoch_length(cfg):
        tokenizer = load_tokenizer(derived.tokenizer_name(cfg), cfg.data.special_tokens or (), cfg.data.cache_dir)
        vocab = vocab or len(tokenizer)
        if needs_epoch_length(cfg):
            extra = 1 if derived.objective(cfg) == "causal" else 0
            per_epoch = steps_per_epoch(cfg, build_data(cfg, tokenizer, t.seq_len + extra, eval_sequences=0))
    try:
        stages = schedule.plan(cfg, per_epoch)
    except schedule.StageError as err:
        raise TrainingError(str(err)) from err
    return stages, stage_rows(cfg, stages, vocab)


def trainable_per_stage(cfg: StackwiseConfig, stages: list[schedule.Stage], vocab_size: int) -> list[int]:
    from ..models.builders import build_model

    with torch.device("meta"):
        model = build_model(cfg.model, vocab_size, load_weights=False)
        rack = Rack(model, quantize=False)
        return [trainable_count(rack.apply(stage)) for stage in stages]


def _mask(cfg: StackwiseConfig, stage: schedule.Stage) -> str:
    if derived.objective(cfg) != "masked_diffusion":
        return "-"
    if stage.mask is None:
        t = cfg.training
        return f"U({t.min_mask_fraction:g}, {t.max_mask_fraction:g})"
    if len(stage.mask) == 1:
        return f"{stage.mask[0]:.3g}"
    return "{" + ", ".join(f"{f:.3g}" for f in stage.mask) + "}"


def _lr(stage: schedule.Stage) -> str:
    parts: dict[str, float] = {}
    for s in stage.stacks:
        if s.lr is not None:
            parts["adapters" if s.train == "adapters" else ("block" if s.role in ("new", "all") else "trunk")] = s.lr
    parts["embed+head" if stage.embeddings else "head"] = stage.lr
    return ", ".join(f"{what} {lr:g}" for what, lr in parts.items())


def stage_rows(
    cfg: StackwiseConfig, stages: list[schedule.Stage], vocab_size: int, counts: list[int] | None = None
) -> list[dict[str, Any]]:
    """One row per stage: stage, layers, trainable, adapters, precision, lr, steps, mask (`counts`: trainable
    parameters per stage, when already measured)."""
    counts = counts if counts is not None else trainable_per_stage(cfg, stages, vocab_size)
    rows = []
    for stage, count in zip(stages, counts, strict=True):
        layers = " ".join(
            schedule.describe_stack(s) + ("*" if s.role == "new" else "") + (" (frozen)" if s.train == "frozen" else "")
            for s in stage.stacks
        )
        adapters = ", ".join(
            f"{schedule.describe_stack(s)}: " + "+".join(f"{a.name} {a.rank}/{a.alpha:g}" for a in s.adapters)
            for s in stage.stacks
            if s.adapters
        )
        merged = ", ".join(sorted({name for _, name in stage.merge}))
        precision = ", ".join(
            f"{schedule.describe_stack(s)} {s.base if s.base != 'fp32' else (s.compute or cfg.training.precision)}"
            for s in stage.stacks
        )
        rows.append(
            {
                "stage": f"{stage.index + 1}/{len(stages)}",
                "layers": layers,
                "trainable": count,
                "adapters (rank/alpha)": (adapters or "-") + (f"; {merged} merged first" if merged else ""),
                "precision": precision,
                "lr": _lr(stage),
                "steps": f"{stage.start + 1}-{stage.end}",
                "mask": _mask(cfg, stage),
            }
        )
    return rows
