"""CPU training tokens/s of a small GPT-2 in stackwise's `Trainer` against `transformers`' `Trainer`, same size and data.

    python benchmarks/train_throughput.py [--d-model 256] [--layers 4] [--heads 4] [--seq 256] [--batch 8]
        [--warmup 3] [--steps 20] [--rounds 2] [--threads N] [--documents 100]

What both sides train, and why it is the same work:

- Model: the GPT-2 architecture (learned positions, pre-LayerNorm, tanh-GELU MLP of 4 x d_model, biases, tied
  embeddings, SDPA attention), fp32, no dropout. One `GPT2LMHeadModel` is initialised from `--seed`; each
  transformers round trains a copy of it, and each stackwise round loads its weights, converted by `from_hf`, into
  the model its `Trainer` built (in place, so the optimizer keeps holding the same parameters).
- Data: stackwise's own pipeline (`build_data` inside `Trainer.prepare`: the built-in corpus, its first
  `--documents` documents, GPT-2 tokenizer). Its batches are (B, L + 1): inputs `[:, :-1]`, targets `[:, 1:]`.
  The transformers `Trainer` gets the same sequences in the same order (sequential sampler) as
  `{"input_ids": s[:-1], "labels": s[:-1], "shift_labels": s[1:]}`. `shift_labels` is the Trainer's supported
  way to hand over targets that are already shifted (its padding-free collators use it), so both models read the
  same L input tokens and predict the same L targets: the same loss, on the same weights, which the JSON shows
  (`loss`: first and last step of the first round of each). Feeding HF the L + 1 tokens instead would make it
  run L + 1 positions; `labels = input_ids` alone would drop one target per sequence. Tokens/s counts B x L input
  tokens per optimizer step for both, as stackwise's own logs do.
- Optimizer: `torch.optim.AdamW` on both sides (single-tensor on CPU in both), same lr, betas, eps 1e-8 and
  weight decay, each library's usual decay groups (stackwise: weight matrices, not embeddings; transformers:
  everything but biases and LayerNorms, so wte/wpe too), constant lr without warmup, gradient clipping at 1.0.
  No evaluation, no checkpoints, no logging during the timed steps, `dataloader_num_workers=0`, same thread count.

Timing: each round builds a fresh trainer and runs `--warmup + --steps` optimizer steps. The clock is read at the
start and end of every optimizer step: for stackwise around `Trainer.train_step` (which also takes its batch from
the loader), for transformers with a `TrainerCallback` (`on_step_begin` / `on_step_end`; its batch is fetched
just before). `tokens_per_s` is steps x B x L over the wall time from the end of the last warm-up step to the end
of the last step, so it includes whatever each loop does between steps; `in_step_tokens_per_s` counts only the
time inside the steps. Setup (tokenising, building the model and trainer) and stackwise's final checkpoint are
outside both. Rounds alternate (stackwise, transformers, stackwise, ...) because the machine is shared and noisy;
the medians over rounds are compared. Prints one JSON object; a ratio above 1 means stackwise is faster.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import torch
import transformers
from torch.utils.data import Dataset

from stackwise import StackwiseConfig, Trainer
from stackwise.models import from_hf


class StepClock(transformers.TrainerCallback):
    """Start and end times of each optimizer step, and its loss; a TrainerCallback, also called by hand."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.starts.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.ends.append(time.perf_counter())

    def rates(self, warmup: int, tokens_per_step: int) -> tuple[float, float]:
        """(wall-clock tokens/s over the steps after `warmup`, tokens/s counting only the time inside them)."""
        n = len(self.ends) - warmup
        wall = self.ends[-1] - self.ends[warmup - 1] if warmup else self.ends[-1] - self.starts[0]
        inside = sum(e - s for s, e in zip(self.starts[warmup:], self.ends[warmup:], strict=True))
        return n * tokens_per_step / wall, n * tokens_per_step / inside


class ShiftedSequences(Dataset):
    """stackwise's (L + 1)-token training sequences as transformers inputs with the targets already shifted."""

    def __init__(self, sequences: torch.Tensor):
        self.sequences = sequences  # (N, L + 1)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.sequences[i]
        inputs = s[:-1].clone()
        return {"input_ids": inputs, "labels": inputs, "shift_labels": s[1:].clone()}


def gpt2(args: argparse.Namespace) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(args.seed)
    config = transformers.GPT2Config(
        vocab_size=args.vocab,
        n_embd=args.d_model,
        n_layer=args.layers,
        n_head=args.heads,
        n_inner=4 * args.d_model,
        n_positions=args.seq,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    config._attn_implementation = "sdpa"
    return transformers.GPT2LMHeadModel(config)


def stackwise_config(args: argparse.Namespace, checkpoint_dir: str) -> StackwiseConfig:
    total = args.warmup + args.steps
    return StackwiseConfig.from_dict(
        {
            "model": {
                "d_model": args.d_model,
                "n_layers": args.layers,
                "n_heads": args.heads,
                "d_ff": 4 * args.d_model,
                "ffn_activation": "gelu",
                "norm_type": "layernorm",
                "use_rope": False,
                "bias": True,
                "tie_embeddings": True,
                "max_seq_len": args.seq,
                "vocab_size": args.vocab,
                "dropout": 0.0,
            },
            "training": {
                "seq_len": args.seq,
                "batch_size": args.batch,
                "max_steps": total,
                "learning_rate": args.lr,
                "weight_decay": args.weight_decay,
                "betas": [0.9, 0.95],
                "lr_scheduler_type": "constant",
                "warmup_steps": 0,
                "optimizer": "adamw",
                "precision": "fp32",
                "device": "cpu",
                "max_grad_norm": 1.0,
                "seed": args.seed,
                "log_interval": total,
                "save_interval": 10 * total,
                "validation_interval": 10 * total,
                "checkpoint_dir": checkpoint_dir,
                "run_id": "bench",
            },
            "logging": {"tensorboard": False},
            "data": {"tokenizer_path": "gpt2", "num_samples": args.documents, "validation_fraction": 0.0},
        }
    )


def prepared_stackwise(args: argparse.Namespace, weights: dict[str, torch.Tensor], workdir: str) -> Trainer:
    trainer = Trainer(stackwise_config(args, workdir)).prepare()
    trainer.model.load_state_dict(weights)
    return trainer


def run_stackwise(trainer: Trainer, clock: StepClock) -> None:
    step = trainer.train_step

    def timed(batches):
        clock.starts.append(time.perf_counter())
        loss, norm = step(batches)
        clock.ends.append(time.perf_counter())
        clock.losses.append(loss)
        return loss, norm

    trainer.train_step = timed
    trainer.fit()


def run_transformers(args: argparse.Namespace, base, sequences: torch.Tensor, clock: StepClock, workdir: str) -> None:
    targs = transformers.TrainingArguments(
        output_dir=workdir,
        per_device_train_batch_size=args.batch,
        max_steps=args.warmup + args.steps,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-8,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        use_cpu=True,
        seed=args.seed,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
        remove_unused_columns=False,  # keep shift_labels
        report_to=[],
        logging_strategy="no",
        eval_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=copy.deepcopy(base), args=targs, train_dataset=ShiftedSequences(sequences), callbacks=[clock]
    )
    step = trainer.training_step

    def recorded(*a, **k):
        loss = step(*a, **k)
        clock.losses.append(float(loss))
        return loss

    trainer.training_step = recorded
    trainer.train()


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps at the start of each round")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per library, alternating")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--documents", type=int, default=100, help="documents of the built-in corpus to tokenise")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    tokens_per_step = args.batch * args.seq

    base = gpt2(args)
    weights = from_hf(base).state_dict()
    results: dict[str, list[StepClock]] = {"stackwise": [], "transformers": []}
    threads_seen: set[int] = set()
    sequences = description = None
    # Trainers print to stdout (transformers' final metrics); stdout is kept for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        for _ in range(args.rounds):
            for name in results:
                gc.collect()
                threads_seen.add(torch.get_num_threads())
                clock = StepClock()
                with tempfile.TemporaryDirectory(prefix="train_throughput-") as workdir:
                    if name == "stackwise":
                        trainer = prepared_stackwise(args, weights, workdir)
                        if sequences is None:  # the batches this run will train on, for transformers
                            with torch.random.fork_rng(devices=[]):
                                batches = islice(trainer.data.batches(0), args.warmup + args.steps)
                                sequences = torch.cat(list(batches))
                            description = trainer.data.description
                        run_stackwise(trainer, clock)
                        del trainer
                    else:
                        run_transformers(args, base, sequences, clock, workdir)
                threads_seen.add(torch.get_num_threads())
                results[name].append(clock)

    rates = {name: [c.rates(args.warmup, tokens_per_step) for c in clocks] for name, clocks in results.items()}
    wall = {name: [r[0] for r in rs] for name, rs in rates.items()}
    inside = {name: [r[1] for r in rs] for name, rs in rates.items()}
    median = {name: statistics.median(v) for name, v in wall.items()}
    median_inside = {name: statistics.median(v) for name, v in inside.items()}
    print(
        json.dumps(
            {
                "benchmark": "GPT-2-architecture LM training on CPU, fp32: stackwise Trainer vs transformers Trainer, "
                "same weights, data and optimizer",
                "model": {
                    "d_model": args.d_model,
                    "n_layers": args.layers,
                    "n_heads": args.heads,
                    "d_ff": 4 * args.d_model,
                    "vocab_size": args.vocab,
                    "parameters": sum(p.numel() for p in base.parameters()),
                    "attention": base.config._attn_implementation,
                },
                "data": description,
                "batch": args.batch,
                "seq_len": args.seq,
                "tokens_per_step": tokens_per_step,
                "warmup_steps": args.warmup,
                "timed_steps": args.steps,
                "optimizer": f"AdamW lr {args.lr:g} betas (0.9, 0.95) weight_decay {args.weight_decay:g}, "
                "constant lr, clip 1.0",
                "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in wall.items()},
                "median_tokens_per_s": {k: round(v, 1) for k, v in median.items()},
                "ratio_stackwise_over_transformers": round(median["stackwise"] / median["transformers"], 3),
                "in_step_tokens_per_s": {k: [round(x, 1) for x in v] for k, v in inside.items()},
                "in_step_ratio": round(median_inside["stackwise"] / median_inside["transformers"], 3),
                "loss": {k: [round(c[0].losses[0], 4), round(c[0].losses[-1], 4)] for k, c in results.items()},
                "max_loss_difference": round(
                    max(abs(a - b) for a, b in zip(*(c[0].losses for c in results.values()), strict=True)), 5
                ),
                "threads": sorted(threads_seen),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "machine": f"{cpu_name()}, {os.cpu_count()} cores",
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
