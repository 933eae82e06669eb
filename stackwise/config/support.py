"""Which part of stackwise consumes each config field, and which fields nothing consumes yet.

The schema describes what the engine does: every field is either read by a named component
(`CONSUMED`) or listed in `NOT_YET` with the component that will read it. `stackwise train` calls
`unsupported_settings` first and refuses a config that sets a `NOT_YET` field, instead of ignoring it.
When a component starts reading a field, move the field from `NOT_YET` to `CONSUMED` (a test walks the
schema and fails when a field is in neither, or in both).
"""

from __future__ import annotations

from pydantic import BaseModel

from .errors import Issue
from .fields import section_type
from .rules import set_fields
from .schema import StackwiseConfig

DISTRIBUTED = "stackwise.train distributed wrappers (DDP / FSDP)"
DISTILL = "stackwise.train distillation (teacher losses)"
EVALS = "stackwise.train benchmark evaluation"

# Read today.
BUILDER = "stackwise.models.builders.build_model"
CONSUMED: dict[str, str] = {
    "model.name": "stackwise.config (label shown by `show` and `presets`)",
    "training.description": "stackwise.config (label shown by `show`)",
    **{
        f"model.{name}": BUILDER
        for name in (
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "d_ff",
            "mlp_multiple",
            "ffn_activation",
            "norm_type",
            "norm_eps",
            "dropout",
            "attention_dropout",
            "max_seq_len",
            "use_rope",
            "rope_theta",
            "tie_embeddings",
            "bias",
            "initializer_range",
            "attention_type",
            "attention_mode",
            "mla.q_lora_rank",
            "mla.kv_lora_rank",
            "mla.qk_rope_head_dim",
            "mla.qk_nope_head_dim",
            "mla.v_head_dim",
            "kernel_type",
            "kernel_dim",
            "quantization",
            "subln",
            "use_peer",
            "peer_start_layer",
            "peer",
            "tokenizer_embedding",
        )
    },
    **{
        path: "stackwise.train.trainer (training engine)"
        for path in (
            "training.init_from",
            "training.objective",
            "training.optimizer",
            "training.learning_rate",
            "training.min_lr",
            "training.weight_decay",
            "training.betas",
            "training.momentum",
            "training.lr_scheduler_type",
            "training.warmup_steps",
            "training.warmup_ratio",
            "training.decay_ratio",
            "training.max_grad_norm",
            "training.batch_size",
            "training.gradient_accumulation_steps",
            "training.seq_len",
            "training.max_steps",
            "training.num_train_epochs",
            "training.steps_per_epoch",
            "training.precision",
            "training.tf32",
            "training.compile",
            "training.gradient_checkpointing",
            "training.device",
            "training.seed",
            "training.min_mask_fraction",
            "training.max_mask_fraction",
            "training.mask_token_id",
            "training.run_id",
            "training.checkpoint_dir",
            "training.log_dir",
            "training.log_interval",
            "training.save_interval",
            "training.validation_interval",
            "training.ckpt_keep",
            "training.resume_from_checkpoint",
            "training.log_level",
            "training.debug",
            "training.mask_loss_weighting",
        )
    },
    **{
        path: "stackwise.train.packing (data pipeline)"
        for path in (
            "data.dataset_path",
            "data.datasets",
            "data.data_mixes_file",
            "data.data_mix",
            "data.data_dir",
            "data.config",
            "data.split",
            "data.format",
            "data.text_field",
            "data.text_template",
            "data.streaming",
            "data.shuffle",
            "data.shuffle_buffer",
            "data.cache_dir",
            "data.num_workers",
            "data.use_dummy_data",
            "data.num_samples",
            "data.validation_path",
            "data.validation_fraction",
        )
    },
    "model.pretrained_name": "stackwise.train.trainer.pretrained_model",
    "training.stage": "stackwise.train.trainer (a label of the run; distillation stages are in VALUES_NOT_YET)",
    "data.tokenizer_path": "stackwise.train.tokenizer",
    "data.special_tokens": "stackwise.train.tokenizer",
    "evaluation.batch_size": "stackwise.train.objectives.evaluate",
    "evaluation.max_batches": "stackwise.train.objectives.evaluate",
    **{
        f"training.{name}": "stackwise.train.stages (the stage schedule) and stackwise.train.rack"
        for name in (
            "mode",
            "fusion_mode",
            "total_blocks",
            "block_size",
            "epochs_per_layer",
            "qlora_lr",
            "current_block_lr",
            "qlora_enabled",
            "quantization_enabled",
            "quantization_type",
            "time_step_masking",
            "num_time_steps",
            "time_step_mask_fractions",
            "mask_schedule_type",
            "progressive",
        )
    },
    "training.cache_activations": "stackwise.train.rack.TrunkCache",
    "model.attention_kernel": "stackwise.kernels.dispatch (Transformer.use_kernels)",
    "model.peer_kernel": "stackwise.kernels.dispatch (Transformer.use_kernels)",
    "training.save_fused_checkpoints": "stackwise.train.trainer.Trainer.save_fused",
    "logging.jsonl": "stackwise.train.metrics",
    "logging.tensorboard": "stackwise.train.metrics",
    "logging.wandb": "stackwise.train.metrics",
}

# The component that will consume each field not read yet. Every leaf field is named, or its sub-section
# (`model.peer`) is: never a whole top-level section, so that a new field must be placed on purpose.
PLANNED: dict[str, tuple[str, ...]] = {
    DISTILL: (
        "distillation.lambda_logits",
        "distillation.gamma_attention",
        "distillation.temperature",
        "distillation.attention",
        "distillation.teacher",
    ),
    EVALS: ("evaluation.evals", "evaluation.evals_registry_path"),
    DISTRIBUTED: (
        "distributed.strategy",
        "distributed.backend",
        "distributed.num_gpus",
        "distributed.num_nodes",
        "distributed.gradient_accumulation_factor",
        "distributed.fsdp",
    ),
}
# Fields read today for some values only: the values that ask for a component not built yet.
VALUES_NOT_YET: dict[str, tuple[frozenset, str]] = {
    "training.progressive.new_stack_precision": (
        frozenset({"nvfp4"}),
        "FP4 training kernels for NVIDIA Blackwell GPUs (not built; train the new stack in bfloat16)",
    ),
    "training.stage": (frozenset({"distillation", "layerwise_distillation", "subln_insertion"}), DISTILL),
}
NOT_YET: dict[str, str] = {path: component for component, paths in PLANNED.items() for path in paths}


def field_paths(model: type[BaseModel] = StackwiseConfig, prefix: str = "") -> list[str]:
    """Dotted path of every leaf field of the schema (sub-sections expanded)."""
    out = []
    for name, info in model.model_fields.items():
        section = section_type(info.annotation)
        out.extend(field_paths(section, f"{prefix}{name}.") if section else [f"{prefix}{name}"])
    return out


def consumer_of(path: str) -> tuple[str, bool]:
    """(component, consumed_now) for a dotted field path; KeyError when no component is recorded."""
    parts = path.split(".")
    for end in range(len(parts), 1, -1):  # a field, or its sub-section; never a whole top-level section
        prefix = ".".join(parts[:end])
        if prefix in CONSUMED:
            return CONSUMED[prefix], True
        if prefix in NOT_YET:
            return NOT_YET[prefix], False
    raise KeyError(f"no consumer recorded for {path}: add it to CONSUMED or PLANNED in stackwise/config/support.py")


def _value(cfg: BaseModel, path: str) -> object:
    value: object = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _default(path: str) -> object:
    model: type[BaseModel] = StackwiseConfig
    parts = path.split(".")
    for part in parts[:-1]:
        model = section_type(model.model_fields[part].annotation)  # type: ignore[assignment]
    return model.model_fields[parts[-1]].get_default(call_default_factory=True)


def unsupported_settings(cfg: StackwiseConfig) -> list[Issue]:
    """An error for each setting the config gives a non-default value that no component consumes yet (what
    `train` refuses). A setting written at its default value asks for what the engine already does."""
    issues = []
    for section in type(cfg).model_fields:
        for path in set_fields(getattr(cfg, section), section):
            component, consumed = consumer_of(path)
            value = _value(cfg, path)
            if not consumed and value != _default(path):
                issues.append(Issue(path, f"`{path}` is not supported yet: it will be read by {component}"))
            elif path in VALUES_NOT_YET and value in VALUES_NOT_YET[path][0]:
                issues.append(
                    Issue(path, f"`{path}: {value}` is not supported yet: it will be read by {VALUES_NOT_YET[path][1]}")
                )
    return issues
