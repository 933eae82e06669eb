"""The `training` section: optimisation, schedule, stack-wise modes, masking, progressive QLoRA, run directory."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import field_validator

from .fields import PRECISION_SYNONYMS, Section, field, reject, synonyms

RankPattern = Literal["constant", "increasing", "decreasing", "linear"]


class LoRASpec(Section):
    """Rank and alpha of one stack's LoRA adapters (an entry of `qlora_configs`)."""

    rank: int = field(..., "LoRA rank.", ge=1)
    alpha: float = field(..., "LoRA alpha; the update is scaled by alpha / rank.", gt=0)


class ProgressiveConfig(Section):
    """Progressive training: stacks added to a growing rack, with dual LoRA (guide 000)."""

    enabled: bool = field(False, "Train stacks one at a time, each added to the rack of stacks trained before it.")
    trunk_strategy: Literal["frozen", "qlora"] = field(
        "frozen", "How the trunk (already trained stacks) is treated: frozen, or 4-bit quantized with LoRA adapters."
    )
    new_stack_precision: Annotated[
        Literal["full", "half", "bfloat16", "nvfp4"],
        reject({"qlora": "`qlora` is not a precision; to adapt the trunk with QLoRA set `trunk_strategy: qlora`"}),
        synonyms({"fp32": "full", "float32": "full", "fp16": "half", "float16": "half", "bf16": "bfloat16"}),
    ] = field("full", "Precision of the stack being trained: full, half, bfloat16, or nvfp4 (needs FP4 hardware).")
    building_mode: Literal["append", "prepend"] = field(
        "append", "Where a new stack goes: after the trunk (append) or before it (prepend)."
    )
    qlora_enabled: bool = field(False, "Add stack LoRA adapters to each new stack.")
    qlora_strategy: Literal["simplified", "progressive", "variable"] = field(
        "simplified",
        "simplified: every stack gets qlora_rank/alpha; progressive: ranks follow the patterns; variable: qlora_configs.",
    )
    qlora_rank: int = field(16, "Stack LoRA rank (the base rank for the progressive patterns).", ge=1)
    qlora_alpha: float = field(32.0, "Stack LoRA alpha (the base alpha for the progressive patterns).", gt=0)
    progressive_qlora: bool = field(False, "Add progressive QLoRA adapters to the trunk when a new stack is added.")
    progressive_qlora_rank: int = field(8, "Rank of the trunk's progressive QLoRA adapters.", ge=1)
    progressive_qlora_alpha: float = field(16.0, "Alpha of the trunk's progressive QLoRA adapters.", gt=0)
    qlora_rank_pattern: RankPattern = field(
        "constant",
        "Rank of stack k for qlora_strategy progressive: constant r; increasing r*2^k; decreasing r/2^k; linear r*(k+1).",
    )
    qlora_alpha_pattern: RankPattern = field("constant", "Alpha of stack k, by the same patterns as the rank.")
    qlora_configs: dict[int, LoRASpec] | None = field(
        None, "Per-stack {rank, alpha} for qlora_strategy variable, keyed by stack index (0-based)."
    )


class TrainingConfig(Section):
    """How the model is trained. Canonical names are Stack-Wise's (guide 000)."""

    # -- schedule of stages -------------------------------------------------------------------
    mode: Annotated[
        Literal["end_to_end", "layerwise", "blockwise", "fused"],
        synonyms({"end-to-end": "end_to_end", "e2e": "end_to_end", "fusion": "fused"}),
    ] = field("end_to_end", "end_to_end, layerwise (block_size 1), blockwise, or fused (blocks added one at a time).")
    fusion_mode: Literal["frozen", "trainable"] = field(
        "frozen", "fused mode: keep the trunk frozen, or train it through adapters on a quantized trunk."
    )
    total_blocks: int | None = field(None, "Number of blocks; total_blocks x block_size = n_layers.", ge=1)
    block_size: int | None = field(
        None, "Layers per block (1 for layerwise); null = n_layers / total_blocks, or 1.", ge=1
    )
    epochs_per_layer: int | None = field(
        None, "Passes over the data per block stage; null splits max_steps evenly.", ge=1
    )
    cache_activations: bool = field(False, "Cache the frozen trunk's activations instead of recomputing them.")
    stage: (
        Annotated[
            Literal[
                "language",
                "code",
                "tools",
                "subln_insertion",
                "layerwise_distillation",
                "continue_pretrain",
                "distillation",
            ],
            reject({"rlhf": "RLHF (PPO) is not supported by stackwise; train with a language-modelling stage instead"}),
        ]
        | None
    ) = field(None, "Named stage of a multi-stage pipeline (guides 002 and 004).")
    description: str | None = field(None, "Free-text description of this run or stage.")
    init_from: str | None = field(None, "Checkpoint whose model weights initialise training (not a resume).")
    objective: (
        Annotated[
            Literal["causal", "masked_diffusion"],
            synonyms(
                {"clm": "causal", "next_token": "causal", "mlm": "masked_diffusion", "diffusion": "masked_diffusion"}
            ),
        ]
        | None
    ) = field(
        None,
        "causal (next token) or masked_diffusion; null = masked_diffusion when masking or bidirectional, else causal.",
    )

    # -- optimisation ---------------------------------------------------------------------------
    optimizer: Annotated[
        Literal["adamw", "muon", "adamw_8bit"],
        synonyms({"muon_adam": "muon", "muon_adamw": "muon", "adamw8bit": "adamw_8bit", "adam8bit": "adamw_8bit"}),
    ] = field("adamw", "adamw; muon (Muon for hidden matrices, AdamW for the rest); adamw_8bit (bitsandbytes).")
    learning_rate: float = field(3e-4, "Peak learning rate.", gt=0, typical=(1e-6, 1e-3), guide="002")
    min_lr: float = field(0.0, "Learning rate at the end of the decay.", ge=0)
    qlora_lr: float | None = field(None, "Learning rate of trunk adapters; null = learning_rate.", gt=0)
    current_block_lr: float | None = field(
        None, "Learning rate of the block being trained; null = learning_rate.", gt=0
    )
    weight_decay: float = field(
        0.01,
        "Decoupled weight decay (not applied to norms, biases, embeddings).",
        ge=0,
        typical=(0.0, 0.3),
        guide="002",
    )
    betas: tuple[float, float] = field((0.9, 0.95), "AdamW betas.")
    momentum: float = field(0.95, "Muon momentum.", ge=0, lt=1)
    lr_scheduler_type: Annotated[
        Literal["cosine", "linear", "constant", "wsd"], synonyms({"warmup_stable_decay": "wsd"})
    ] = field("cosine", "Decay after warmup: cosine, linear, constant, or wsd (warmup-stable-decay).")
    warmup_steps: int | None = field(
        None, "Warmup steps (or give warmup_ratio, not both).", ge=0, typical=(100, 10000), guide="002"
    )
    warmup_ratio: float | None = field(None, "Warmup as a fraction of the total steps.", ge=0, lt=1)
    decay_ratio: float = field(0.2, "wsd: fraction of the steps spent in the final decay.", gt=0, le=1)
    max_grad_norm: float | None = field(
        1.0, "Gradient clipping threshold; null disables clipping.", gt=0, typical=(0.1, 10.0), guide="002"
    )

    # -- batch and length -------------------------------------------------------------------------
    batch_size: int = field(8, "Sequences per micro-batch per device.", ge=1, typical=(1, 32), guide="002")
    gradient_accumulation_steps: int = field(1, "Micro-batches accumulated per optimizer step.", ge=1)
    seq_len: int = field(512, "Training sequence length (documents are packed to it).", ge=1)
    max_steps: int | None = field(None, "Optimizer steps (or give num_train_epochs, not both).", ge=1)
    num_train_epochs: int | None = field(
        None, "Passes over the data (or give max_steps).", ge=1, typical=(1, 100), guide="002"
    )
    steps_per_epoch: int | None = field(None, "Steps in one epoch; required for epochs over a streaming dataset.", ge=1)

    # -- numerics and hardware ----------------------------------------------------------------------
    precision: Annotated[Literal["auto", "fp32", "fp16", "bf16"], synonyms(PRECISION_SYNONYMS)] = field(
        "auto", "Autocast precision: auto (bf16 where supported, else fp32), fp32, fp16 (with a grad scaler), bf16."
    )
    tf32: bool = field(False, "Allow TF32 matmuls on Ampere+ GPUs.")
    compile: bool = field(False, "torch.compile the model.")
    gradient_checkpointing: bool = field(False, "Recompute layer activations in the backward pass to save memory.")
    device: str = field(
        "auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$"
    )
    seed: int = field(42, "Random seed.")

    # -- adapters and quantization (fused trainable) -------------------------------------------------
    qlora_enabled: bool = field(False, "Train the trunk through LoRA adapters (fused, fusion_mode trainable).")
    quantization_enabled: bool = field(False, "Quantize the frozen trunk's base weights.")
    quantization_type: Literal["nf4", "fp4", "fp8", "fp16", "fp32"] = field(
        "nf4", "Trunk weight format when quantization_enabled: nf4 / fp4 (bitsandbytes 4-bit), fp8, fp16, fp32."
    )

    # -- masked diffusion -----------------------------------------------------------------------------
    time_step_masking: bool = field(False, "Block k trains at the mask fraction of time step k (depth as time).")
    num_time_steps: int | None = field(
        None, "Number of time steps; null = len(time_step_mask_fractions) or blocks.", ge=1
    )
    time_step_mask_fractions: tuple[float, ...] | None = field(
        None, "Mask fraction of each time step: strictly increasing, in (0, 1]."
    )
    min_mask_fraction: float = field(0.1, "Smallest mask fraction of the depth schedule.", gt=0, le=1)
    max_mask_fraction: float = field(0.99, "Largest mask fraction of the depth schedule.", gt=0, le=1)
    mask_schedule_type: Literal["linear", "exponential", "cosine"] = field(
        "linear", "How the mask fraction grows with depth between min and max."
    )
    mask_token_id: int | None = field(
        None, "Token id used for masked positions; null = the tokenizer's mask token.", ge=0
    )
    mask_loss_weighting: Annotated[
        Literal["mean", "inverse_t"], synonyms({"elbo": "inverse_t", "1/t": "inverse_t", "nelbo": "inverse_t"})
    ] = field(
        "mean",
        "Masked-diffusion loss: mean cross-entropy over masked positions, or inverse_t (each sequence's masked "
        "cross-entropy weighted by 1/t, the NELBO of masked-diffusion models).",
    )
    progressive: ProgressiveConfig = field(
        factory=ProgressiveConfig, description="Progressive (stack-by-stack) training with dual LoRA."
    )

    # -- run directory, logging cadence, checkpoints ----------------------------------------------------
    run_id: str | None = field(None, "Name of the run directory under checkpoint_dir; null = a timestamp.")
    checkpoint_dir: str = field("./checkpoints", "Directory that holds run directories.")
    log_dir: str | None = field(None, "Directory for logs; null = <run dir>/logs.")
    log_interval: int = field(10, "Steps between logged metrics.", ge=1)
    save_interval: int = field(500, "Steps between checkpoints.", ge=1)
    validation_interval: int = field(500, "Steps between validation runs.", ge=1)
    ckpt_keep: int | None = field(3, "Checkpoints kept (oldest deleted first); null keeps all.", ge=1)
    save_fused_checkpoints: bool = field(False, "Also save the assembled model after each stage.")
    resume_from_checkpoint: str | None = field(None, "Checkpoint directory to resume from, or `latest`.")
    log_level: Annotated[Literal["debug", "info", "warning", "error"], synonyms({"warn": "warning"})] = field(
        "info", "Console log level."
    )
    debug: bool = field(False, "Debug mode: anomaly detection and extra checks (slower).")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError("each beta must be in [0, 1)")
        return value

    @field_validator("max_grad_norm", mode="before")
    @classmethod
    def _clipping_zero(cls, value: object) -> object:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            raise ValueError(
                "max_grad_norm: 0 would scale every gradient to zero; to disable clipping set `max_grad_norm: null`"
            )
        return value

    @field_validator("time_step_mask_fractions")
    @classmethod
    def _fractions_increasing(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("time_step_mask_fractions is empty; give one fraction per time step")
        bad = [f for f in value if not 0 < f <= 1]
        if bad:
            raise ValueError(f"mask fractions must be in (0, 1]; got {bad}")
        for i in range(1, len(value)):
            if value[i] <= value[i - 1]:
                raise ValueError(
                    f"mask fractions must be strictly increasing; step {i} ({value[i]}) <= step {i - 1} ({value[i - 1]})"
                )
        return value
