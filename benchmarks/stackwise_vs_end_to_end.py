"""Stack-wise training modes against end-to-end training: validation NELBO at equal tokens and at equal compute.

    python benchmarks/stackwise_vs_end_to_end.py                      # CPU size, every arm, seeds 0 and 1
    python benchmarks/stackwise_vs_end_to_end.py --size gpu           # one GPU (cuda, bf16)
    python benchmarks/stackwise_vs_end_to_end.py --size gpu --dry-run # validate and plan every config, train nothing
        [--arms end_to_end layerwise ...] [--seeds 0 1] [--steps N] [--out DIR]

What is compared: a small bidirectional masked-diffusion transformer with RoPE on the built-in corpus (byte
tokenizer, 258 ids with the mask), trained end to end and in each stack-wise mode (`ARMS`), plus a causal control
(the same model with causal attention and the next-token objective, end to end and fused). Every arm of a seed
reads the same batches (the data position runs on across stages), for the same number of optimizer steps, so the
same tokens; each stage has its own warmup and cosine decay, as the engine does. Masked arms train on the NELBO
(`mask_loss_weighting: inverse_t`), the quantity evaluated. Note the engine's depth-as-time rule: without
`time_step_masking`, stage k of a K-stage run trains only at mask fraction k of min..max_mask_fraction (0.1..0.99),
while end-to-end draws t ~ U(0.1, 0.99). The embeddings are untied: tied (the engine's default), the head is the
input embedding, which then trains in every stage with its gradient passing through the frozen trunk, so
blockwise trains exactly as fused_frozen and layerwise as progressive_frozen (bit for bit, measured).

Evaluation: the engine's `evaluate`, every `steps / 10` steps, at each stage end and at step 0, on the same held-out
sequences with the same fixed masks (stratified t, constant seed) for every arm and seed; the figure is
`val_bits_per_byte` (NELBO bits per byte for masked arms, next-token bits per byte for causal arms). The CPU size
tokenizes the first 200 documents of the corpus (5% held out) so that setup takes seconds, not tens of seconds.

Each arm x seed runs in its own subprocess (this script with `--child`), so peak memory is the arm's own:
`ru_maxrss` of the child (CPU RSS, whole process, torch included) and, on CUDA, `torch.cuda.max_memory_allocated`.

Compute is time. A run's training seconds are its wall time from `fit()` on, less the time spent evaluating and
writing checkpoints (a layerwise run evaluates at every stage end; that is not the mode's training cost); the
summary's `seconds` (everything) is kept as `wall_seconds`. Equal compute: end-to-end's validation figure at the
training seconds the arm used, interpolated on end-to-end's curve of the same seed (its final figure when the arm
ran longer; then `extrapolated` is true), and whether the arm's final figure is lower, in every seed. On a shared
machine other programs stretch some steps many times over (measured here: 0.12 s steps taking 2 s for a while;
CPU time grows with them, the threads spin), so the same comparison is also made on "steady" seconds: each
stage's steps at that stage's median step time over its logging windows (`steps / 20` steps each), which
leaves short bursts of load out (not a run slowed from start to end: each run records the load average). Where
the two verdicts differ, the machine was busy. `--size cpu` takes about 8 minutes on an idle 2-core machine.

Writes `<out>/runs/<arm>-seed<seed>/` (run directories), `<out>/logs/`, `<out>/results.json` (every run, with its
curve) and `<out>/loss_curves.png`; prints the aggregates and the verdicts on the pre-stated lines as JSON. The file
is longer than the usual 300 lines so that the experiment stays one file: the child (one run), the parent's
aggregation and verdicts, the plot and the dry run.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Pre-stated pass/fail lines, fixed before any run. Tolerances are on (arm / reference - 1), mean over seeds.
LINE_FUSED = "at equal tokens, fused (fused_frozen, fused_qlora) within 3% of end-to-end"
LINE_FROZEN = "frozen stack-wise (layerwise, blockwise, progressive_frozen) within 5%"
LINE_COMPUTE = "at equal compute, say plainly whether any mode beats end-to-end"
EQUAL_TOKENS_LINES = {
    "fused_frozen": (LINE_FUSED, 0.03),
    "fused_qlora": (LINE_FUSED, 0.03),
    "layerwise": (LINE_FROZEN, 0.05),
    "blockwise": (LINE_FROZEN, 0.05),
    "progressive_frozen": (LINE_FROZEN, 0.05),
}

MASKED_ARMS = (
    "end_to_end",
    "layerwise",
    "blockwise",
    "fused_frozen",
    "fused_qlora",
    "progressive_frozen",
    "progressive_qlora",
)
CAUSAL_ARMS = ("causal_end_to_end", "causal_fused_frozen")
ARMS = MASKED_ARMS + CAUSAL_ARMS
SIZES: dict[str, dict[str, Any]] = {
    "cpu": {"d_model": 128, "n_layers": 4, "n_heads": 4, "seq_len": 128, "batch_size": 16, "steps": 180,
            "lr": 1e-3, "precision": "fp32", "device": "cpu", "documents": 200, "validation_fraction": 0.05,
            "eval_batch": 64, "eval_batches": 2, "lora_rank": 8},
    "gpu": {"d_model": 512, "n_layers": 8, "n_heads": 8, "seq_len": 512, "batch_size": 32, "steps": 4000,
            "lr": 6e-4, "precision": "bf16", "device": "cuda", "documents": None, "validation_fraction": 0.01,
            "eval_batch": 64, "eval_batches": 8, "lora_rank": 16},
}  # fmt: skip


def reference(arm: str) -> str:
    return "causal_end_to_end" if arm in CAUSAL_ARMS else "end_to_end"


def arm_training(arm: str, size: dict[str, Any]) -> dict[str, Any]:
    """The `training` keys that make an arm what it is."""
    ranks = {"qlora_rank": size["lora_rank"], "qlora_alpha": 2 * size["lora_rank"]}
    fused = {"mode": "fused", "total_blocks": 2, "fusion_mode": "frozen"}
    return {
        "end_to_end": {},
        "layerwise": {"mode": "layerwise"},
        "blockwise": {"mode": "blockwise", "block_size": 2},
        "fused_frozen": fused,
        "fused_qlora": {**fused, "fusion_mode": "trainable", "qlora_enabled": True, "quantization_enabled": True,
                        "quantization_type": "nf4", "qlora_lr": size["lr"], "progressive": ranks},
        "progressive_frozen": {"total_blocks": 4, "progressive": {"enabled": True, "trunk_strategy": "frozen"}},
        "progressive_qlora": {"total_blocks": 4, "qlora_lr": size["lr"], "progressive": {
            "enabled": True, "trunk_strategy": "qlora", "qlora_enabled": True, "progressive_qlora": True, **ranks,
            "progressive_qlora_rank": size["lora_rank"], "progressive_qlora_alpha": 2 * size["lora_rank"]}},
        "causal_end_to_end": {"objective": "causal"},
        "causal_fused_frozen": {**fused, "objective": "causal"},
    }[arm]  # fmt: skip


def config_dict(arm: str, seed: int, size: dict[str, Any], steps: int, out: Path) -> dict[str, Any]:
    causal = arm in CAUSAL_ARMS
    every = max(1, steps // 10)
    training = {
        "seq_len": size["seq_len"],
        "batch_size": size["batch_size"],
        "max_steps": steps,
        "learning_rate": size["lr"],
        "warmup_ratio": 0.1,
        "lr_scheduler_type": "cosine",
        "precision": size["precision"],
        "device": size["device"],
        "seed": seed,
        "log_interval": max(1, steps // 20),
        "validation_interval": every,
        "save_interval": steps,  # only the final checkpoint
        "ckpt_keep": 1,
        "checkpoint_dir": str(out / "runs"),
        "run_id": f"{arm}-seed{seed}",
        **({} if causal else {"mask_loss_weighting": "inverse_t"}),
        **arm_training(arm, size),
    }
    data: dict[str, Any] = {"tokenizer_path": "bytes", "validation_fraction": size["validation_fraction"]}
    if size["documents"]:
        data["num_samples"] = size["documents"]
    return {
        "model": {
            "d_model": size["d_model"],
            "n_layers": size["n_layers"],
            "n_heads": size["n_heads"],
            "vocab_size": 258,
            "max_seq_len": size["seq_len"],
            "use_rope": True,
            "tie_embeddings": False,  # tied, the head trains the input embedding: see the module docstring
            "attention_mode": "causal" if causal else "bidirectional",
        },
        "training": training,
        "data": data,
        "evaluation": {"batch_size": size["eval_batch"], "max_batches": size["eval_batches"]},
        "logging": {"tensorboard": False},
    }


# -- child: one arm x seed -------------------------------------------------------------------------------
class Clock:
    """A run's training seconds since fit() began, less evaluating and saving; its eval curve and step-time marks."""

    def __init__(self) -> None:
        self.restart()
        self.curve: list[dict[str, float]] = []
        self.marks: list[tuple[int, float]] = []  # (step, seconds) at each logged training row
        self.tokens = lambda: 0

    def restart(self) -> None:
        self.start, self.excluded = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def exclude(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.excluded += time.perf_counter() - began

        return timed

    def record(self, step: int, row: dict[str, float], at_start: bool = False) -> None:
        if "tokens_per_s" in row:
            self.marks.append((step, self.seconds()))
        if "val_loss" not in row:
            return
        point = {
            "step": step,
            "tokens": self.tokens(),
            "seconds": 0.0 if at_start else self.seconds(),
            "val_bits_per_byte": row.get("val_bits_per_byte"),
            "val_loss": row["val_loss"],
        }
        if self.curve and self.curve[-1]["step"] == step:  # a stage end that was also a periodic evaluation
            self.curve[-1] = point
        else:
            self.curve.append(point)

    def steady(self, stage_ends: list[int]) -> Callable[[int], float]:
        """Seconds to reach a step at each stage's median step time over its logging windows (load bursts left out)."""
        per_step: dict[int, list[float]] = {}
        last_step, last_seconds = 0, 0.0
        for step, seconds in self.marks:  # a window never spans a stage end: the engine logs at every stage end
            stage = bisect.bisect_left(stage_ends, step)
            per_step.setdefault(stage, []).append((seconds - last_seconds) / (step - last_step))
            last_step, last_seconds = step, seconds
        median = {k: statistics.median(v) for k, v in per_step.items()}

        def at(step: int) -> float:
            bounds = zip([0, *stage_ends[:-1]], stage_ends, strict=True)
            return sum(median[k] * max(0, min(step, end) - begin) for k, (begin, end) in enumerate(bounds))

        return at


def run_child(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from stackwise import StackwiseConfig, Trainer

    cfg = StackwiseConfig.from_dict(config_dict(arm, seed, SIZES[args.size], args.steps, args.out))
    shutil.rmtree(Path(cfg.training.checkpoint_dir) / cfg.training.run_id, ignore_errors=True)
    clock = Clock()
    trainer = Trainer(cfg, on_progress=lambda step, total, row: clock.record(step, row)).prepare()
    clock.tokens = lambda: trainer.progress.tokens
    clock.record(0, trainer.evaluate(), at_start=True)
    trainer.evaluate, trainer.save = clock.exclude(trainer.evaluate), clock.exclude(trainer.save)
    cuda = trainer.num.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock.restart()
    summary = trainer.fit()
    steady = clock.steady([s.end for s in trainer.stages])
    for point in clock.curve:
        point["steady_seconds"] = steady(point["step"])
    stages = summary["stages"] or [{"trainable": trainer.trainable, **summary}]
    return {
        "arm": arm,
        "seed": seed,
        "status": summary["status"],
        "val_bits_per_byte": summary.get("val_bits_per_byte"),
        "val_loss": summary.get("val_loss"),
        "tokens": summary["tokens"],
        "steps": summary["step"],
        "train_seconds": clock.curve[-1]["seconds"],
        "train_steady_seconds": clock.curve[-1]["steady_seconds"],
        "wall_seconds": summary["seconds"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "load_average_1min": os.getloadavg()[0],  # the run's own threads included: above the core count, a busy machine
        "parameters": summary["parameters"],
        "trainable_per_stage": [s["trainable"] for s in stages],
        "stage_val_bits_per_byte": [s.get("val_bits_per_byte") for s in stages],
        "curve": clock.curve,
        "run_dir": str(trainer.run_dir),
    }


# -- parent: launch, aggregate, plot ---------------------------------------------------------------------
def launch(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one arm x seed in a subprocess; its last stdout line is its JSON result (or an error record)."""
    log = args.out / "logs" / f"{arm}-seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    size = ["--size", args.size, "--steps", str(args.steps), "--out", str(args.out)]
    cmd = [sys.executable, __file__, "--child", arm, str(seed), *size]
    with log.open("w") as err:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = log.read_text().strip().splitlines()[-3:]
        return {"arm": arm, "seed": seed, "error": f"exit {done.returncode}: " + " | ".join(tail), "log": str(log)}
    return json.loads(lines[-1])


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def tidy(value: Any, digits: int = 4) -> Any:
    """Floats rounded to `digits` decimals, all the way down, for the JSON."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: tidy(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy(v, digits) for v in value]
    return value


def interpolate(curve: list[dict[str, float]], clock: str, seconds: float) -> tuple[float, bool]:
    """A curve's val bits/byte at `seconds` of `clock` (linear), and whether that lies past its end (then its final)."""
    points = [(p[clock], p["val_bits_per_byte"]) for p in curve]
    if seconds >= points[-1][0]:
        return points[-1][1], seconds > points[-1][0]
    for (s0, v0), (s1, v1) in zip(points, points[1:], strict=False):
        if s0 <= seconds <= s1:
            return v0 + (v1 - v0) * (seconds - s0) / max(s1 - s0, 1e-12), False
    return points[0][1], False


def equal_compute(pairs: list[tuple[dict, dict]], clock: str) -> dict[str, Any]:
    """Per seed: the reference's val bits/byte at the training seconds (of `clock`) the arm used; does the arm beat it."""
    total = {"seconds": "train_seconds", "steady_seconds": "train_steady_seconds"}[clock]
    seeds = []
    for r, ref in pairs:
        at, past = interpolate(ref["curve"], clock, r[total])
        seeds.append(
            {
                "seed": r["seed"],
                "arm_seconds": r[total],
                "reference_seconds": ref[total],
                "arm": r["val_bits_per_byte"],
                "reference_at_arm_seconds": at,
                "extrapolated": past,
                "beats": r["val_bits_per_byte"] < at,
            }
        )
    wins = sum(s["beats"] for s in seeds)
    verdict = f"{'BEATS' if wins == len(seeds) else 'DOES NOT BEAT'} {pairs[0][1]['arm']} ({wins}/{len(seeds)} seeds)"
    return {"verdict": verdict, "seeds": seeds}


def compare(arm: str, pairs: list[tuple[dict, dict]]) -> dict[str, Any]:
    """An arm against its reference, seed by seed: the gap at equal tokens, and equal compute on both clocks."""
    gap = stats([100 * (r["val_bits_per_byte"] / ref["val_bits_per_byte"] - 1) for r, ref in pairs])
    out: dict[str, Any] = {"equal_tokens_gap_pct": gap}
    if arm in EQUAL_TOKENS_LINES:
        line, tol = EQUAL_TOKENS_LINES[arm]
        out["equal_tokens_verdict"] = {"line": line, "result": "PASS" if gap["mean"] <= 100 * tol else "FAIL"}
    out["equal_compute_wall"] = equal_compute(pairs, "seconds")
    out["equal_compute_steady"] = equal_compute(pairs, "steady_seconds")
    return out


PER_RUN = ("val_bits_per_byte", "val_loss", "train_seconds", "train_steady_seconds", "wall_seconds", "peak_rss_mib",
           "peak_cuda_mib")  # fmt: skip


def aggregate(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    ok = {(r["arm"], r["seed"]): r for r in runs if "error" not in r and r.get("val_bits_per_byte") is not None}
    out: dict[str, Any] = {}
    for arm in arms:
        mine = [r for (a, _), r in sorted(ok.items()) if a == arm]
        ref_name = reference(arm)
        out[arm] = {
            "reference": ref_name,
            "seeds": [r["seed"] for r in mine],
            "errors": [r["error"] for r in runs if r["arm"] == arm and "error" in r],
            **{key: stats([r[key] for r in mine if r[key] is not None]) for key in PER_RUN},
            "tokens": mine[0]["tokens"] if mine else None,
            "trainable_per_stage": mine[0]["trainable_per_stage"] if mine else None,
        }
        pairs = [(r, ok[(ref_name, r["seed"])]) for r in mine if (ref_name, r["seed"]) in ok]
        if arm != ref_name and pairs:
            out[arm].update(compare(arm, pairs))
    answers = {}
    for clock in ("wall", "steady"):
        compared = {a: e[f"equal_compute_{clock}"]["verdict"] for a, e in out.items() if f"equal_compute_{clock}" in e}
        winners = [a for a, verdict in compared.items() if verdict.startswith("BEATS")]
        if not compared:
            answers[clock] = "no comparison: no arm ran with its end-to-end reference"
        else:
            answers[clock] = f"YES: {', '.join(winners)}" if winners else "NO: no mode beats its end-to-end reference"
    return {
        "verdicts": {arm: verdict_lines(e) for arm, e in out.items() if "equal_tokens_gap_pct" in e},
        "equal_compute_answer": {"training_seconds": answers["wall"], "steady_seconds": answers["steady"]},
        "arms": out,
    }


def verdict_lines(entry: dict[str, Any]) -> dict[str, str]:
    """An arm's verdicts, each with the numbers behind it."""
    gap = entry["equal_tokens_gap_pct"]
    numbers = f"{gap['mean']:+.2f}% vs {entry['reference']} (seeds {gap['min']:+.2f}%..{gap['max']:+.2f}%)"
    verdict = entry.get("equal_tokens_verdict")
    lines = {"equal_tokens": f"{verdict['result']}: {numbers}; {verdict['line']}" if verdict else numbers}
    for clock in ("wall", "steady"):
        lines[f"equal_compute_{clock}"] = entry[f"equal_compute_{clock}"]["verdict"]
    return lines


def mean_curve(runs: list[dict[str, Any]]) -> list[tuple[float, float, float]]:
    """(tokens, seconds, val bits/byte) averaged over seeds, point by point (every seed evaluates at the same steps)."""
    n = min(len(r["curve"]) for r in runs)
    return [
        tuple(statistics.fmean(r["curve"][i][k] for r in runs) for k in ("tokens", "seconds", "val_bits_per_byte"))
        for i in range(n)
    ]


def plot(runs: list[dict[str, Any]], arms: list[str], path: Path) -> None:
    try:
        import matplotlib
    except ImportError as err:
        raise SystemExit("loss_curves.png needs matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_tokens, by_seconds) = plt.subplots(1, 2, figsize=(13, 5))
    for i, arm in enumerate(arms):
        mine = [r for r in runs if r["arm"] == arm and "error" not in r and r["curve"]]
        if not mine:
            continue
        tokens, seconds, val = zip(*mean_curve(mine), strict=True)
        style = {"linestyle": "--" if arm in CAUSAL_ARMS else "-", "marker": ".", "color": f"C{i}", "label": arm}
        by_tokens.plot(tokens, val, **style)
        by_seconds.plot(seconds, val, **style)
    by_tokens.set_xlabel("training tokens")
    by_seconds.set_xscale("symlog", linthresh=1.0)  # a run slowed by other programs stretches a linear axis
    by_seconds.set_xlabel("training seconds (evaluation excluded; log scale above 1 s)")
    for ax in (by_tokens, by_seconds):
        ax.set_ylabel("val bits/byte (NELBO for masked arms; dashed: causal)")
        ax.grid(alpha=0.3)
    by_tokens.legend(fontsize=8)
    fig.suptitle(f"stack-wise vs end-to-end (mean over seeds {sorted({r['seed'] for r in runs})})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def describe(stage: Any) -> str:
    """One line per stage: its stacks (layers: what trains, adapters, base), steps, mask fractions."""
    stacks = " ".join(
        f"[{','.join(map(str, x.layers))}:{x.train}{'+' + '+'.join(a.name for a in x.adapters) if x.adapters else ''}"
        f"{'/' + x.base if x.base != 'fp32' else ''}]"
        for x in stage.stacks
    )
    mask = f", t in {[round(m, 3) for m in stage.mask]}" if stage.mask else ""
    return f"{stacks} embeddings {'train' if stage.embeddings else 'frozen'}, {stage.steps} steps{mask}"


def dry_run(args: argparse.Namespace) -> dict[str, Any]:
    """Validate every arm's config and work out its stage schedule, without torch."""
    from stackwise import StackwiseConfig
    from stackwise.config.rules import run_rules
    from stackwise.config.support import unsupported_settings
    from stackwise.train.stages import plan

    arms = {}
    for arm in args.arms:
        cfg = StackwiseConfig.from_dict(config_dict(arm, args.seeds[0], SIZES[args.size], args.steps, args.out))
        if unsupported_settings(cfg):
            raise SystemExit(f"{arm}: unsupported settings {unsupported_settings(cfg)}")
        arms[arm] = {
            "warnings": [f"{i.path}: {i.message}" for i in run_rules(cfg) if i.severity != "error"],
            "stages": [describe(s) for s in plan(cfg)],
        }
    return {"size": args.size, "steps": args.steps, "size_settings": SIZES[args.size], "arms": arms}


def machine() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.machine()}, {os.cpu_count()} cores"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, help="optimizer steps of every run (default: the size's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stackwise_vs_end_to_end"))
    parser.add_argument("--dry-run", action="store_true", help="validate the configs and print the stage plans")
    parser.add_argument("--child", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or SIZES[args.size]["steps"]
    args.out = args.out.resolve()
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON line
            result = run_child(args.child[0], int(args.child[1]), args)
        print(json.dumps(result))
        return
    if args.dry_run:
        print(json.dumps(dry_run(args), indent=2))
        return
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    began, runs = time.perf_counter(), []
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    for i, (arm, seed) in enumerate(jobs, 1):
        run = launch(arm, seed, args)
        runs.append(run)
        said = run.get("error") or f"{run['val_bits_per_byte']:.4f} bits/byte, {run['train_seconds']:.1f} s training"
        print(f"[{i}/{len(jobs)}] {arm} seed {seed}: {said}", file=sys.stderr, flush=True)
    result = {
        "benchmark": "stack-wise modes vs end-to-end: masked-diffusion transformer (RoPE) + causal control, "
        "built-in corpus, byte tokenizer; val bits/byte at equal tokens and equal compute",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "size": args.size,
        "size_settings": SIZES[args.size],
        "steps": args.steps,
        "seeds": args.seeds,
        "total_seconds": round(time.perf_counter() - began, 1),
        "lines": [LINE_FUSED, LINE_FROZEN, LINE_COMPUTE],
        **aggregate(runs, args.arms),
        "results_json": str(args.out / "results.json"),
        "plot": str(args.out / "loss_curves.png"),
    }
    (args.out / "results.json").write_text(json.dumps(tidy({**result, "runs": runs}, 6), indent=2) + "\n")
    plot(runs, args.arms, args.out / "loss_curves.png")
    print(json.dumps(tidy(result), indent=2))


if __name__ == "__main__":
    main()
