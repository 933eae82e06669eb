"""Guide examples that do not validate as the guides wrote them, and the real configs in ../shared/seed-configs.

Each guide example below is copied verbatim from ../shared/spec/ (its fixed form is in examples/).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stackwise.config import load_config
from stackwise.config.errors import Issue
from tests.helpers import write

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seed-configs"


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """1-based line number of the nth line of `path` that starts with `needle` (after indentation)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    hits = [i for i, line in enumerate(lines, 1) if line.lstrip().startswith(needle)]
    return hits[nth - 1]


def only(issues: list[Issue], path: str) -> Issue:
    found = [i for i in issues if i.path == path]
    assert len(found) == 1, f"expected one issue at {path}, got: " + "\n".join(map(str, issues))
    return found[0]


# -- guide 000 -------------------------------------------------------------------------------------------------------
GUIDE_000_PRODUCTION = """
model:
  vocab_size: 50257
  d_model: 768
  n_layers: 12
  n_heads: 12
  attention_mode: "causal"
  tie_embeddings: true

training:
  mode: "fused"
  fusion_mode: "frozen"
  total_blocks: 3
  block_size: 4
  qlora_enabled: true
  quantization_type: "fp16"
  time_step_masking: true
  batch_size: 8
  max_steps: 1000
  run_id: "gpt2_fusion_v1"
"""


def test_000_production_needs_a_mask_token_and_warns_that_its_qlora_settings_do_nothing(tmp_path: Path) -> None:
    # Time-step masking trains masked diffusion, whose mask token comes after GPT-2's 50257 ids: vocab_size
    # 50257 has no room for it (training would stop at the tokenizer check). With fusion_mode frozen the
    # QLoRA/quantization keys are ignored, and masked diffusion under causal attention sees only left context:
    # examples/000_production.yaml fixes all three.
    result = load_config(write(tmp_path, GUIDE_000_PRODUCTION))
    assert "at least 50258" in only(result.errors, "model.vocab_size").message
    assert len(result.errors) == 1
    assert {i.path for i in result.warnings} == {
        "training.qlora_enabled",
        "training.quantization_type",
        "model.attention_mode",
    }
    assert "fusion_mode trainable" in only(result.warnings, "training.qlora_enabled").message
    assert "causal" in only(result.warnings, "model.attention_mode").message


GUIDE_000_QUICK_START_WITH_VARIABLE_QLORA = """
model:
  vocab_size: 50257
  d_model: 768
  n_layers: 12
  n_heads: 12
  attention_mode: "causal"
  tie_embeddings: true

training:
  mode: "fused"              # layerwise | blockwise | fused
  fusion_mode: "frozen"      # frozen | trainable
  total_blocks: 3
  block_size: 4
  learning_rate: 5.0e-4
  batch_size: 8
  max_steps: 1000
  progressive:
    enabled: true
    qlora_enabled: true
    qlora_strategy: "variable"
    # Variable QLoRA configurations (for qlora_strategy: "variable")
    qlora_configs:
      0: {rank: 8, alpha: 16}       # Stack 0: small QLoRA
      1: {rank: 16, alpha: 32}      # Stack 1: medium QLoRA
      2: {rank: 32, alpha: 64}      # Stack 2: large QLoRA
      3: {rank: 64, alpha: 128}     # Stack 3: very large QLoRA
"""


def test_000_variable_qlora_configs_need_a_stack_per_key(tmp_path: Path) -> None:
    # The guide's Quick Start model has 3 stacks (total_blocks 3), but the Progressive QLoRA Setup's
    # qlora_configs (used by qlora_strategy "variable") names stacks 0..3.
    path = write(tmp_path, GUIDE_000_QUICK_START_WITH_VARIABLE_QLORA)
    result = load_config(path)
    issue = only(result.errors, "training.progressive.qlora_configs[3]")
    assert "stack index 3 does not exist" in issue.message and "3 stacks" in issue.message
    assert issue.line == line_of(path, "3: {rank: 64")
    assert len(result.errors) == 1


@pytest.mark.parametrize("precision", ["full", "half", "bfloat16", "nvfp4", "qlora"])
def test_000_precision_options(tmp_path: Path, precision: str) -> None:
    # "Precision Options" lists qlora next to the precisions, marked "(not a precision)".
    path = write(tmp_path, f'training:\n  progressive:\n    enabled: true\n    new_stack_precision: "{precision}"\n')
    result = load_config(path)
    if precision != "qlora":
        assert result.valid, "\n".join(map(str, result.issues))
        return
    issue = only(result.errors, "training.progressive.new_stack_precision")
    assert "not a precision" in issue.message and "trunk_strategy: qlora" in issue.message
    assert issue.line == 4


# -- guide 001 -------------------------------------------------------------------------------------------------------
GUIDE_001_TRAIN_CONFIG = """
train_config:
  output_dir: "./output"              # Directory for checkpoints and logs
  per_device_train_batch_size: 16     # Batch size per GPU for training
  per_device_eval_batch_size: 16      # Batch size per GPU for evaluation
  gradient_accumulation_steps: 4      # Accumulate gradients over N steps
  learning_rate: 5e-5                 # Peak learning rate
  weight_decay: 0.01                  # Weight decay for AdamW optimizer
  max_grad_norm: 1.0                  # Gradient clipping threshold
  # --- Training Duration (Choose ONE) ---
  # max_steps: 100000                 # Train for a fixed number of steps (Recommended for streaming)
  num_train_epochs: 3                 # Train for a fixed number of epochs (Requires 'steps_per_epoch')
  # steps_per_epoch: 10000            # Required if using num_train_epochs with streaming datasets
  # --- Scheduler ---
  lr_scheduler_type: "cosine"         # Learning rate scheduler type (e.g., linear, cosine)
  warmup_ratio: 0.1                   # Proportion of total steps for LR warmup
  # --- Logging & Saving ---
  log_level: "info"                   # Logging level (debug, info, warning, error)
  logging_steps: 100                  # Log metrics every N steps
  save_steps: 1000                    # Save checkpoint every N steps
  eval_steps: 2000                    # Run evaluation every N steps
  # --- Reproducibility & Precision ---
  seed: 42                            # Random seed
  fp16: true                          # Enable Automatic Mixed Precision (FP16) - Use False if using FP8
  bf16: false                         # Enable Automatic Mixed Precision (BF16) - Use False if using FP8
  tf32: false                         # Allow TF32 on Ampere+ GPUs (PyTorch >= 1.7)
  # --- Resuming ---
  resume_from_checkpoint: null        # Path to checkpoint directory to resume from (e.g., "./output/checkpoint-5000")
"""

GUIDE_001_DATASET_CONFIG = """
dataset_config:
  datasets:
    # --- List of datasets to interleave ---
    - name: "pile-uncopyrighted"          # Unique name for this dataset entry
      path: "monology/pile-uncopyrighted" # Path (HuggingFace dataset name or local path)
      # subset: "en"                      # Optional: Specify subset/config (e.g., for C4, wikipedia)
      split: "train"                      # Dataset split to use
      streaming: true                     # Load data progressively (recommended for large datasets)
      weight: 0.7                         # Sampling weight for interleaving
      # --- Text Extraction (Choose ONE) ---
      text_field: "text"                  # Field containing the raw text
      # text_template: "Instruction:\\n{instruction}\\n\\nInput:\\n{input}\\n\\nOutput:\\n{output}" # OR: Format string using fields from the dataset

    - name: "c4"
      path: "allenai/c4"
      subset: "en"
      split: "train"
      streaming: true
      weight: 0.2
      text_field: "text"

    # ... more datasets ...

  tokenizer_name: "gpt2"                # Name or path of the HuggingFace tokenizer
  max_seq_length: 2048                # Maximum sequence length for tokenization
"""

GUIDE_001_DATASETS_YAML = """
# configs/datasets.yaml
data_mixes:
  # --- Define one or more named mixes ---
  high_quality_mix:                 # Name of the mix
    name: "high_quality_mix"        # Display name (can be same as key)
    datasets:                       # List of datasets for this mix
      - name: "custom_dataset_1"
        path: "/local/path/to/dataset_1.jsonl" # Local path or HF name
        format: "json"              # Specify format for local files (json, csv, text)
        split: "train"
        streaming: true
        weight: 0.4
        text_field: "text"          # Or use text_template
      # ... more datasets ...

  science_mix:
    name: "science_mix"
    datasets:
      # ... datasets for science mix ...
"""


def test_001_epochs_over_streaming_datasets(tmp_path: Path) -> None:
    path = write(tmp_path, GUIDE_001_TRAIN_CONFIG + GUIDE_001_DATASET_CONFIG)
    result = load_config(path)
    issue = only(result.errors, "training.num_train_epochs")
    assert "streaming dataset has no length" in issue.message
    assert "max_steps" in issue.message and "steps_per_epoch" in issue.message
    assert issue.key == "train_config.num_train_epochs"
    assert issue.line == line_of(path, "num_train_epochs: 3")
    assert len(result.errors) == 1


def test_001_datasets_yaml_mix_without_datasets(tmp_path: Path) -> None:
    # The guide's science_mix placeholder leaves `datasets:` with only a comment: YAML null.
    path = write(tmp_path, GUIDE_001_DATASETS_YAML, "datasets.yaml")
    result = load_config(path)
    assert result.kind == "data_mixes"
    issue = only(result.errors, "data_mixes.science_mix.datasets")
    assert "tuple" in issue.message or "list" in issue.message
    assert issue.line == line_of(path, "datasets:", nth=2)
    assert len(result.errors) == 1


def test_001_epochs_over_a_streaming_data_mix(tmp_path: Path) -> None:
    # 001's train_config duration (epochs, no steps_per_epoch) over 001's datasets.yaml mix, whose dataset streams.
    placeholder = "    datasets:\n      # ... datasets for science mix ...\n"
    mixes = GUIDE_001_DATASETS_YAML.replace(placeholder, "    datasets: [{path: allenai/peS2o}]\n")
    write(tmp_path, mixes, "datasets.yaml")
    config = f"""
    train_config:
      num_train_epochs: 3
    dataset_config:
      data_mixes_file: "{tmp_path / "datasets.yaml"}"
      data_mix: "high_quality_mix"
    """
    result = load_config(write(tmp_path, config))
    assert not result.valid
    assert {i.path for i in result.errors} & {"training.num_train_epochs", "data.data_mix"}
    assert "streaming" in " ".join(i.message for i in result.errors)


# -- guide 003 -------------------------------------------------------------------------------------------------------
GUIDE_003_MEMORY = """
# Minimal memory usage
micro_batch_size: 1
grad_accum_steps: 1
seq_len: 1024
gradient_checkpointing: true
precision: "float16"

# Higher throughput (moderate memory)
micro_batch_size: 1
grad_accum_steps: 4
seq_len: 2048
gradient_checkpointing: true
precision: "float16"
"""

GUIDE_003_LR_SCHEDULES = """
# Standard schedule
lr: 3e-4
min_lr: 3e-5
warmup_steps: 1000

# Smaller models (higher LR)
lr: 1e-3
min_lr: 1e-4
warmup_steps: 500

# Larger models (lower LR)
lr: 1e-4
min_lr: 1e-5
warmup_steps: 2000
"""


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        (GUIDE_003_MEMORY, ["micro_batch_size", "grad_accum_steps", "seq_len", "gradient_checkpointing", "precision"]),
        (GUIDE_003_LR_SCHEDULES, ["lr", "min_lr", "warmup_steps"]),
    ],
    ids=["memory_optimization", "learning_rate_scheduling"],
)
def test_003_alternatives_in_one_block_repeat_keys(tmp_path: Path, text: str, keys: list[str]) -> None:
    # "Memory Optimization" and "Learning Rate Scheduling" give alternatives in one YAML block: as one file,
    # every key is given two or three times and YAML would keep only the last.
    path = write(tmp_path, text, "training.yaml")
    result = load_config(path)
    assert not result.valid
    for key in keys:
        first = line_of(path, f"{key}:")
        found = [i for i in result.errors if i.path == key]
        assert found, f"no duplicate-key error for {key}"
        assert all(f"duplicate key `{key}`: given on line {first}" in i.message for i in found)
        assert [i.line for i in found] == [line_of(path, f"{key}:", n) for n in range(2, len(found) + 2)]


# -- guide 004 -------------------------------------------------------------------------------------------------------
def test_004_hello_world_stage2_overrides_only_max_steps(tmp_path: Path) -> None:
    # `train.py model=smollm2_135m training=stage2_pretrain distributed=single_gpu training.max_steps=10`
    path = write(tmp_path, "{}\n")
    overrides = ["model=smollm2_135m", "training=stage2_pretrain", "distributed=single_gpu", "training.max_steps=10"]
    result = load_config(path, overrides)
    assert result.valid, "\n".join(map(str, result.errors))  # the guide's "run this first" command works
    issue = only(result.warnings, "training.warmup_steps")
    assert "warmup_steps (550) is not below max_steps (10)" in issue.message
    assert issue.file == "<built-in preset training=stage2_pretrain>" and issue.line is not None
    fixed = load_config(path, [*overrides, "training.warmup_steps=2"])
    assert fixed.valid and not [
        w for w in fixed.warnings if w.path == "training.warmup_steps" and "max_steps" in w.message
    ]


# -- ../shared/seed-configs ------------------------------------------------------------------------------------------
def seed(relative: str) -> Path:
    if not SEEDS.is_dir():
        pytest.skip(f"{SEEDS} is not present")
    return SEEDS / relative


SEED_FILES = sorted(p.relative_to(SEEDS).as_posix() for p in SEEDS.rglob("*.yaml")) if SEEDS.is_dir() else []


@pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seed-configs is not present")
@pytest.mark.parametrize("relative", SEED_FILES)
def test_every_seed_config_loads_and_places_its_errors(relative: str) -> None:
    result = load_config(seed(relative))
    for issue in result.errors:
        assert issue.file and issue.line is not None, f"error without a location: {issue}"
    assert (result.config is not None) == (result.valid and result.kind == "config")


def test_seed_stack_wise_config() -> None:
    result = load_config(seed("stack-wise/config.yaml"))
    assert not result.valid
    duplicate = only(result.errors, "training.mixed_precision")
    assert "duplicate key `mixed_precision`" in duplicate.message
    assert "line 67" in duplicate.message and "line 113" in duplicate.message
    assert duplicate.line == 113
    assert any("mode layerwise means block_size: 1" in i.message for i in result.errors)


@pytest.mark.parametrize("relative", ["AnarchoBot/pretrain_mlx_phase1.yaml", "AnarchoBot/sft_quick_test.yaml"])
def test_seed_anarchobot_zero_gradient_clipping(relative: str) -> None:
    path = seed(relative)
    result = load_config(path)
    issue = only(result.errors, "training.max_grad_norm")
    assert "max_grad_norm: null" in issue.message
    assert issue.key == "train.max_grad_norm" and issue.line == line_of(path, "max_grad_norm:")


def test_seed_anarchobot_sft_reads_exponents_as_floats() -> None:
    path = seed("AnarchoBot/sft.yaml")
    result = load_config(path)
    assert result.valid, "\n".join(map(str, result.issues))
    assert result.config is not None
    lr = result.config.training.learning_rate
    assert isinstance(lr, float) and lr == 2.5e-4
    # The trap: plain PyYAML (YAML 1.1) reads `1e-5` (no dot) as a string; stackwise reads a float.
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["model"]["norm_eps"] == "1e-5"
    assert result.config.model.norm_eps == 1e-5


def test_seed_llm720_config() -> None:
    result = load_config(seed("llm720/config.yaml"))
    assert result.valid, "\n".join(map(str, result.errors))
    assert result.config is not None
    assert result.config.model.d_model == 768
    assert result.config.model.attention_type == "mla"


def test_seed_llm720_datasets() -> None:
    result = load_config(seed("llm720/datasets.yaml"))
    assert result.kind == "data_mixes"
    assert result.valid, "\n".join(map(str, result.errors))


def test_seed_llm_from_scratch_tiny_model() -> None:
    result = load_config(seed("llm-from-scratch/model/tiny.yaml"))
    assert result.valid, "\n".join(map(str, result.errors))
    assert result.config is not None and result.config.model.d_model == 256


def test_seed_llm_from_scratch_rlhf_is_refused() -> None:
    result = load_config(seed("llm-from-scratch/training/rlhf.yaml"))
    assert not result.valid
    stage = only(result.errors, "training.stage")
    assert "RLHF" in stage.message and "not supported" in stage.message
