"""The `data`, `evaluation`, `logging`, `distributed` and `distillation` sections."""

from __future__ import annotations

from typing import Annotated, Literal

from .fields import PRECISION_SYNONYMS, Section, field, synonyms

DataFormat = Annotated[
    Literal["auto", "text", "json", "csv", "parquet", "npy"], synonyms({"jsonl": "json", "txt": "text", "numpy": "npy"})
]


class DatasetSource(Section):
    """One dataset of an interleaved mix (guide 001's `datasets` entries)."""

    name: str | None = field(None, "Label of this dataset in logs.")
    path: str = field(..., "Hugging Face dataset name, or a local file, directory or glob.")
    subset: str | None = field(None, "Dataset configuration (e.g. `en` for C4).")
    split: str = field("train", "Split to read.")
    format: DataFormat = field("auto", "Format of local files; auto uses the file extension.")
    streaming: bool = field(False, "Stream the dataset instead of downloading/loading it whole.")
    weight: float = field(1.0, "Sampling weight when interleaving (normalised over the mix).", gt=0)
    text_field: str | None = field(None, "Field holding the text; null = `text`. Not with text_template.")
    text_template: str | None = field(None, "Format string over record fields, e.g. `{instruction}\\n{output}`.")


class DataConfig(Section):
    """Where the training text comes from and how it is tokenised."""

    dataset_path: str | None = field(
        None, "A local file, directory or glob, or a Hugging Face dataset name; null = the built-in corpus."
    )
    datasets: tuple[DatasetSource, ...] | None = field(
        None, "Several datasets interleaved by weight (instead of dataset_path)."
    )
    data_mixes_file: str | None = field(None, "A datasets.yaml file of named data mixes (guide 001).")
    data_mix: str | None = field(None, "Name of the mix in data_mixes_file to train on.")
    data_dir: str | None = field(None, "Directory that relative dataset_path / validation_path are resolved against.")
    config: str | None = field(None, "Hugging Face dataset configuration (e.g. `en`).")
    split: str = field("train", "Split to read.")
    format: DataFormat = field("auto", "Format of local files; auto uses the extension (npy = token arrays).")
    text_field: str | None = field(None, "Field holding the text; null = `text`. Not with text_template.")
    text_template: str | None = field(None, "Format string over record fields. Not with text_field.")
    streaming: bool = field(False, "Stream the dataset (needs max_steps, or steps_per_epoch with epochs).")
    shuffle: bool = field(True, "Shuffle the training data.")
    shuffle_buffer: int = field(1000, "Shuffle buffer of a streaming dataset; 0 disables.", ge=0)
    cache_dir: str | None = field(None, "Hugging Face datasets cache directory.")
    num_workers: int = field(0, "Data-loading worker processes; each reads its own shard.", ge=0)
    use_dummy_data: bool = field(False, "Random tokens instead of text, for smoke tests.")
    num_samples: int | None = field(None, "Use at most this many documents (or dummy sequences).", ge=1)
    tokenizer_path: str | None = field(
        None, "Hugging Face tokenizer name or local path; null = model.pretrained_name's tokenizer, else GPT-2's."
    )
    special_tokens: tuple[str, ...] | None = field(None, "Special tokens added to the tokenizer (guide 002).")
    validation_path: str | None = field(None, "Validation data (same kinds as dataset_path).")
    validation_fraction: float = field(
        0.01, "Held-out fraction for validation when validation_path is null.", ge=0, lt=0.5
    )


class EvaluationConfig(Section):
    """Periodic evaluation (guide 001's `eval_config`)."""

    batch_size: int | None = field(None, "Evaluation batch size; null = training batch_size.", ge=1)
    max_batches: int = field(50, "Validation batches per evaluation.", ge=1)
    evals: tuple[str, ...] = field((), "Benchmark names to run (e.g. hellaswag) from evals_registry_path.")
    evals_registry_path: str | None = field(None, "Local registry (directory) of benchmark definitions.")


class WandbConfig(Section):
    """Weights & Biases logging (guide 001's `wandb_config`)."""

    enabled: bool = field(False, "Log to Weights & Biases.")
    project: str | None = field(None, "W&B project.")
    entity: str | None = field(None, "W&B entity (user or team).")
    name: str | None = field(None, "W&B run name; null = run_id.")
    log_model: Literal["checkpoints", "all"] | None = field(
        None, "Upload checkpoints as artifacts: checkpoints, all, or null."
    )
    mode: Literal["online", "offline", "disabled"] = field(
        "online", "W&B mode; offline writes locally for a later sync."
    )
    tags: tuple[str, ...] = field((), "W&B run tags.")


class LoggingConfig(Section):
    """Metric sinks. Cadence is training.log_interval."""

    jsonl: bool = field(True, "Write metrics as JSON lines in the run directory.")
    tensorboard: bool = field(True, "Write TensorBoard events when tensorboard is installed.")
    wandb: WandbConfig = field(factory=WandbConfig, description="Weights & Biases settings.")


DType = Annotated[Literal["fp32", "fp16", "bf16"], synonyms(PRECISION_SYNONYMS)]


class FSDPMixedPrecision(Section):
    """FSDP mixed-precision policy."""

    enabled: bool = field(True, "Use an FSDP mixed-precision policy.")
    param_dtype: DType = field("bf16", "Parameter dtype for compute.")
    reduce_dtype: DType = field("bf16", "Gradient reduction dtype.")
    buffer_dtype: DType = field("bf16", "Buffer dtype.")


class ActivationCheckpointing(Section):
    """Activation checkpointing of wrapped layers."""

    enabled: bool = field(False, "Checkpoint each transformer layer's activations.")
    checkpoint_impl: Literal["NO_REENTRANT", "REENTRANT"] = field("NO_REENTRANT", "torch.utils.checkpoint flavour.")


class CPUOffload(Section):
    """FSDP CPU offload."""

    enabled: bool = field(False, "Offload to CPU.")
    offload_params: bool = field(False, "Offload parameters too (not only optimizer state).")


class StateDictConfig(Section):
    """How FSDP checkpoints are gathered."""

    type: Literal["sharded", "full"] = field(
        "sharded", "sharded (each rank saves its shard) or full (gathered on rank 0)."
    )
    offload_to_cpu: bool = field(True, "Move the state dict to CPU while saving.")


class FSDPConfig(Section):
    """Fully Sharded Data Parallel settings (guide 004's fsdp_multi / fsdp_large)."""

    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = field(
        "FULL_SHARD", "FULL_SHARD (ZeRO-3), SHARD_GRAD_OP (ZeRO-2), NO_SHARD (DDP), HYBRID_SHARD."
    )
    mixed_precision: FSDPMixedPrecision = field(factory=FSDPMixedPrecision, description="FSDP mixed-precision policy.")
    activation_checkpointing: ActivationCheckpointing = field(
        factory=ActivationCheckpointing, description="Per-layer checkpointing."
    )
    backward_prefetch: Literal["BACKWARD_PRE", "BACKWARD_POST"] | None = field(
        "BACKWARD_PRE", "Backward prefetch policy."
    )
    forward_prefetch: bool = field(False, "Prefetch the next all-gather in the forward pass.")
    limit_all_gathers: bool = field(True, "Rate-limit all-gathers to bound memory.")
    cpu_offload: CPUOffload = field(factory=CPUOffload, description="CPU offload.")
    state_dict: StateDictConfig = field(factory=StateDictConfig, description="Checkpoint state-dict type.")


class DistributedConfig(Section):
    """Single device, DDP or FSDP (guide 004's `distributed` groups)."""

    strategy: Literal["single", "ddp", "fsdp"] = field("single", "single device, ddp, or fsdp.")
    backend: Literal["auto", "nccl", "gloo"] = field("auto", "Process-group backend; auto = nccl on CUDA, else gloo.")
    num_gpus: int = field(1, "GPUs per node.", ge=1)
    num_nodes: int = field(1, "Nodes.", ge=1)
    gradient_accumulation_factor: int = field(1, "Extra factor on training.gradient_accumulation_steps.", ge=1)
    fsdp: FSDPConfig = field(factory=FSDPConfig, description="FSDP settings (strategy: fsdp).")


class AttentionDistillation(Section):
    """Attention-relation distillation (BitDistill)."""

    alpha: float = field(1.0, "Weight inside the attention distillation term.", ge=0)
    use_relation_distill: bool = field(True, "Distil A·Aᵀ relation matrices rather than raw attention.")
    distill_layer: int = field(-1, "Layer whose attention is distilled (negative counts from the end).")


class TeacherConfig(Section):
    """The teacher model for distillation."""

    pretrained: str | None = field(None, "Teacher: local path or cached Hugging Face id.")
    load_in_fp16: bool = field(True, "Load the teacher in half precision.")
    freeze: bool = field(True, "Keep the teacher frozen.")


class DistillationConfig(Section):
    """Knowledge distillation from a teacher (guide 004's `distillation` groups)."""

    lambda_logits: float = field(10.0, "Weight of the logits KL term.", ge=0)
    gamma_attention: float = field(1e-5, "Weight of the attention distillation term.", ge=0)
    temperature: float = field(5.0, "Softmax temperature of the logits distillation.", gt=0)
    attention: AttentionDistillation = field(
        factory=AttentionDistillation, description="Attention distillation settings."
    )
    teacher: TeacherConfig = field(factory=TeacherConfig, description="Teacher model.")


class DataMix(Section):
    """One named mix of a `datasets.yaml` file (guide 001)."""

    name: str | None = field(None, "Display name of the mix.")
    datasets: tuple[DatasetSource, ...] = field(..., "Datasets of the mix, interleaved by weight.", min_length=1)


class DataMixesFile(Section):
    """A `datasets.yaml` file: named data mixes selected with `data.data_mix`."""

    data_mixes: dict[str, DataMix] = field(..., "Mixes by name.")
