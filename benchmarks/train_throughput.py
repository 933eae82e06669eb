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
  (`loss_first_last` and `max_loss_difference`, over the steps of the first round). Feeding HF the L + 1 tokens instead would make it
  run L + 1 positions; `labels = input_ids` alone would drop one target per sequence. Tokens/s counts B x L input
  tokens per optimizer step for both, as stackwise's own logs do.
- Optimizer: `torch.optim.AdamW` on both sides (single-tensor on CPU in both), same lr, betas, eps 1e-8 and
  weight decay, each library's usual decay groups (stackwise: weight matrices, not embeddings; transformers:
  everything but biases and LayerNorms, so wte/wpe too), constant lr without warmup, gradient clipping at 1.0.
  No evaluation, no checkpoints, no logging during the timed steps, `dataloader_num_workers=0`, same thread count.

Timing: each round builds a fresh pair of trainers (setup, tokenising included, is outside the timing) and runs
their own training loops, `Trainer.fit()` and `transformers.Trainer.train()`, each in its own thread, taking
optimizer steps in turn: one stackwise step, one transformers step, and so on, the other loop waiting while a step
runs. The machine is shared and noisy (another process on one of the two cores slows a 2-thread step 3x), so
steps that are seconds apart see the same machine; which library goes first alternates between rounds. The clock
is read at the start and end of every optimizer step: for stackwise around `Trainer.train_step` (which also takes
its batch from the loader), for transformers with a `TrainerCallback` (`on_step_begin` / `on_step_end`; its batch
is fetched just before). The first `--warmup` steps of each are not timed, nor a last step that keeps one loop's
teardown (stackwise writes a final checkpoint) away from the other's timed steps. What each loop does between
steps (the lr schedule, logging checks, transformers' batch fetch) is outside the timed steps; run one after the
other, those gaps measured under 10 ms a step for both, against about 2 s for a step.

Per round, tokens/s = timed steps x B x L / their summed time; the JSON has each round, the medians over rounds and
their ratio, and the median over all timed step pairs of (transformers step time / stackwise step time), the
figure least moved by noise. Prints one JSON object; a ratio above 1 means stackwise is faster.
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
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import torch
import transformers
from torch.utils.data import Dataset

from stackwise import StackwiseConfig, Trainer
from stackwise.models import from_hf

NAMES = ("stackwise", "transformers")


class Turns:
    """Lets two training loops, each in its own thread, take optimizer steps in turn."""

    def __init__(self, first: str):
        self.turn = first
        self.finished: set[str] = set()
        self.cond = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name or self.finished - {name})

    def pass_on(self, name: str) -> None:
        with self.cond:
            self.turn = next(n for n in NAMES if n != name)
            self.cond.notify_all()

    def finish(self, name: str) -> None:
        with self.cond:
            self.finished.add(name)
            self.cond.notify_all()


class StepClock(transformers.TrainerCallback):
    """Waits for this loop's turn at the start of each optimizer step; records its start, end, loss and threads."""

    def __init__(self, name: str, turns: Turns):
        self.name, self.turns = name, turns
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.losses: list[float] = []
        self.threads: set[int] = set()

    def begin(self) -> None:
        self.turns.wait(self.name)
        self.threads.add(torch.get_num_threads())
        self.starts.append(time.perf_counter())

    def end(self) -> None:
        self.ends.append(time.perf_counter())
        self.turns.pass_on(self.name)

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.begin()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.end()

    def timed(self, warmup: int, steps: int) -> list[float]:
        """Durations in seconds of the timed steps."""
        window = slice(warmup, warmup + steps)
        return [e - s for s, e in zip(self.starts[window], self.ends[window], strict=True)]


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


def total_steps(args: argparse.Namespace) -> int:
    return args.warmup + args.steps + 1  # + 1: an untimed last step, see the module docstring


def stackwise_config(args: argparse.Namespace, checkpoint_dir: str) -> StackwiseConfig:
    total = total_steps(args)
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


def stackwise_loop(args: argparse.Namespace, weights: dict, workdir: str, clock: StepClock) -> tuple[Trainer, Callable]:
    """A prepared stackwise Trainer with the given weights and its timed train_step, and the call that trains it."""
    trainer = Trainer(stackwise_config(args, workdir)).prepare()
    trainer.model.load_state_dict(weights)  # in place: the optimizer holds these parameters
    step = trainer.train_step

    def timed(batches):
        clock.begin()
        loss, norm = step(batches)
        clock.end()
        clock.losses.append(loss)
        return loss, norm

    trainer.train_step = timed
    return trainer, trainer.fit


def transformers_loop(
    args: argparse.Namespace,
    base: transformers.GPT2LMHeadModel,
    sequences: torch.Tensor,
    workdir: str,
    clock: StepClock,
) -> Callable:
    """The call that trains a copy of `base` on `sequences` with transformers' Trainer, timed by `clock`."""
    targs = transformers.TrainingArguments(
        output_dir=workdir,
        per_device_train_batch_size=args.batch,
        max_steps=total_steps(args),
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
    return trainer.train


def run_in_turns(loops: dict[str, Callable], turns: Turns) -> None:
    """Run each training loop in its own thread (they take steps in turn); re-raise the first failure."""
    errors: list[BaseException] = []

    def body(name: str) -> None:
        try:
            loops[name]()
        except BaseException as err:  # handed to the main thread
            errors.append(err)
        finally:
            turns.finish(name)

    threads = [threading.Thread(target=body, args=(name,), name=name) for name in loops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


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
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per round and library")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each runs both libraries, steps in turn")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--documents", type=int, default=100, help="documents of the built-in corpus to tokenise")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the other loop finishes its setup during the first step")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    tokens_per_step = args.batch * args.seq

    base = gpt2(args)
    weights = from_hf(base).state_dict()
    clocks: dict[str, list[StepClock]] = {name: [] for name in NAMES}
    sequences = description = None
    # Trainers print to stdout (transformers' final metrics); stdout is kept for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        for r in range(args.rounds):
            gc.collect()
            turns = Turns(first=NAMES[r % 2])
            clock = {name: StepClock(name, turns) for name in NAMES}
            with tempfile.TemporaryDirectory(prefix="train_throughput-") as workdir:
                trainer, fit = stackwise_loop(args, weights, f"{workdir}/stackwise", clock["stackwise"])
                if sequences is None:  # the batches stackwise trains on, for transformers
                    with torch.random.fork_rng(devices=[]):
                        batches = islice(trainer.data.batches(0), total_steps(args))
                        sequences = torch.cat(list(batches))
                    description = trainer.data.description
                train = transformers_loop(args, base, sequences, f"{workdir}/transformers", clock["transformers"])
                run_in_turns({"stackwise": fit, "transformers": train}, turns)
                del trainer, fit, train
            for name in NAMES:
                clocks[name].append(clock[name])

    times = {name: [c.timed(args.warmup, args.steps) for c in cs] for name, cs in clocks.items()}
    rates = {name: [len(t) * tokens_per_step / sum(t) for t in ts] for name, ts in times.items()}
    median = {name: statistics.median(v) for name, v in rates.items()}
    pairs = [
        hf / ours
        for ours_round, hf_round in zip(times["stackwise"], times["transformers"], strict=True)
        for ours, hf in zip(ours_round, hf_round, strict=True)
    ]
    all_times = {name: sorted(t for ts in v for t in ts) for name, v in times.items()}
    first = {name: cs[0].losses for name, cs in clocks.items()}
    print(
        json.dumps(
            {
                "benchmark": "GPT-2-architecture LM training on CPU, fp32: stackwise Trainer vs transformers Trainer, "
                "same weights, data and optimizer, steps in turn",
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
                "rounds": args.rounds,
                "optimizer": f"AdamW lr {args.lr:g} betas (0.9, 0.95) weight_decay {args.weight_decay:g}, "
                "constant lr, clip 1.0",
                "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                "median_tokens_per_s": {k: round(v, 1) for k, v in median.items()},
                "ratio_stackwise_over_transformers": round(median["stackwise"] / median["transformers"], 3),
                "paired_step_ratio_median": round(statistics.median(pairs), 3),
                "step_seconds_min_median_max": {
                    k: [round(v[0], 3), round(statistics.median(v), 3), round(v[-1], 3)] for k, v in all_times.items()
                },
                "loss_first_last": {k: [round(v[0], 4), round(v[-1], 4)] for k, v in first.items()},
                "max_loss_difference": round(
                    max(abs(a - b) for a, b in zip(first["stackwise"], first["transformers"], strict=True)), 5
                ),
                "threads": sorted(set().union(*(c.threads for cs in clocks.values() for c in cs))),
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
