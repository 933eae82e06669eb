"""`stackwise train`, `stackwise plan`, `stackwise generate` and `stackwise tokenizer train`.

Exit codes of `train`: 0 finished; 1 an invalid or refused config, or a problem found before training (data,
tokenizer, device, checkpoint), or a diverged loss; 2 usage errors; 130 stopped by Ctrl-C / SIGTERM after
saving a checkpoint (resume with `training.resume_from_checkpoint=latest`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ..config.errors import ConfigError
from .config_commands import _load_one

tokenizer_app = typer.Typer(help="Tokenizers: train a byte-level BPE on a config's data.", no_args_is_help=True)


def _fail(console: Console, message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error[/]: {escape(message)}")
    return typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Domain errors that are the user's to fix: printed as one message, exit 1 (not a traceback)."""
    from ..kernels.dispatch import KernelUnavailableError
    from ..models.builders import UnsupportedModelError
    from ..train.checkpoint import CheckpointError
    from ..train.metrics import MetricsError
    from ..train.optim import OptimizerError
    from ..train.packing import DataError
    from ..train.runtime import DeviceError
    from ..train.tokenizer import TokenizerError
    from ..train.trainer import TrainingError

    return (
        CheckpointError,
        DataError,
        DeviceError,
        KernelUnavailableError,
        MetricsError,
        OptimizerError,
        TokenizerError,
        TrainingError,
        UnsupportedModelError,
    )


def train(
    path: Path = typer.Argument(..., help="Config file."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE...]", help="Overrides and group choices."),
    config_dir: list[Path] = typer.Option([], "--config-dir", "-C", help="Extra folder of config groups."),
    resume: str = typer.Option(
        None, "--resume", help="Checkpoint to resume from, or `latest` (sets resume_from_checkpoint)."
    ),
    sample: bool = typer.Option(True, "--sample/--no-sample", help="Print a short generated sample at the end."),
) -> None:
    """Validate CONFIG, then train the model it describes; a run directory holds checkpoints and metrics."""
    console = Console(highlight=False, soft_wrap=True)
    if resume:
        overrides = [*(overrides or []), f"training.resume_from_checkpoint={resume}"]
    result = _load_one(path, overrides or [], config_dir)
    cfg = result.config
    logging.basicConfig(level=cfg.training.log_level.upper(), format="%(message)s")

    from ..train.trainer import Trainer, TrainingDiverged

    try:
        trainer = Trainer(cfg)
    except ConfigError as err:
        for issue in err.issues:
            console.print(escape(str(dataclasses.replace(issue, file=issue.file or str(path)))))
        raise typer.Exit(1) from None
    try:
        with console.status("preparing: tokenizer, data, model"):
            trainer.prepare()
    except _user_errors() as err:
        raise _fail(console, str(err)) from None
    _print_plan(console, trainer.describe())
    if len(trainer.stages) > 1:
        from ..train.plan import stage_rows

        print_stages(console, stage_rows(cfg, trainer.stages, trainer.vocab_size, trainer.stage_trainable))
    summary = _fit(console, trainer, TrainingDiverged)
    console.print(
        "[bold]done[/]: "
        + ", ".join(
            f"{k} {_fmt(v)}" for k, v in summary.items() if k not in ("last_checkpoint", "stages") and v is not None
        )
    )
    console.print(f"run directory: {escape(str(trainer.run_dir))}")
    if summary["status"] == "interrupted":
        console.print(
            f"stopped at step {summary['step']}; checkpoint {escape(str(summary['last_checkpoint']))}. "
            f"Resume with: stackwise train {escape(str(path))} --resume latest"
            + (f" training.run_id={trainer.run_dir.name}" if not cfg.training.run_id else "")
        )
        raise typer.Exit(130)
    if sample and trainer.data.validation is not None and not cfg.data.use_dummy_data:
        _print_sample(console, trainer)


def plan(
    path: Path = typer.Argument(..., help="Config file."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE...]", help="Overrides and group choices."),
    config_dir: list[Path] = typer.Option([], "--config-dir", "-C", help="Extra folder of config groups."),
) -> None:
    """Print the stage schedule CONFIG trains, without training: per stage the layers present (new block *),
    trainable parameters, adapters and ranks, precision per stack, learning rates, steps and mask fraction."""
    console = Console(highlight=False, soft_wrap=True)
    cfg = _load_one(path, overrides or [], config_dir).config
    from ..config.support import unsupported_settings

    issues = unsupported_settings(cfg)
    if issues:
        for issue in issues:
            console.print(escape(str(dataclasses.replace(issue, file=issue.file or str(path)))))
        raise typer.Exit(1)
    from ..train.plan import plan_for

    try:
        stages, rows = plan_for(cfg)
    except _user_errors() as err:
        raise _fail(console, str(err)) from None
    t = cfg.training
    mode = "progressive" if t.progressive.enabled else t.mode
    console.print(f"[bold]{escape(str(path))}[/]: {mode}, {len(stages)} stage(s), {stages[-1].end:,} steps")
    print_stages(console, rows)


def print_stages(console: Console, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(*[name for name in rows[0]], show_lines=False)
    for row in rows:
        table.add_row(*[escape(f"{v:,}" if isinstance(v, int) else str(v)) for v in row.values()])
    # A wide table: wrapped to a pipe's 80 columns it is unreadable, so it gets at least 150.
    wide = Console(file=console.file, width=max(console.width, 150), highlight=False, no_color=console.no_color)
    wide.print(table)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_plan(console: Console, plan: dict) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, padding=(0, 2))
    for key, value in plan.items():
        if value is not None:
            table.add_row(f"[bold]{key}[/]", escape(f"{value:,}" if isinstance(value, int) else str(value)))
    console.print(table)


def _fit(console: Console, trainer, diverged: type[Exception]) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[text]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=trainer.total_steps, completed=0, text="")
        shown: dict[str, float] = {}

        def on_progress(step: int, total: int, row: dict) -> None:
            shown.update(row)
            parts = [f"{k} {shown[k]:.4g}" for k in ("loss", "val_loss", "lr") if k in shown]
            if "tokens_per_s" in shown:
                parts.append(f"{shown['tokens_per_s']:,.0f} tok/s")
            bar.update(task, completed=step, text="  ".join(parts))
            if "val_loss" in row:
                extra = "".join(f", {k} {row[k]:.4g}" for k in ("val_ppl", "val_bits_per_byte") if k in row)
                bar.console.print(f"step {step}: val_loss {row['val_loss']:.4f}{extra}")

        trainer.on_progress = on_progress
        try:
            return trainer.fit()
        except diverged as err:
            raise _fail(console, str(err)) from None
        except _user_errors() as err:
            raise _fail(console, str(err)) from None


def _print_sample(console: Console, trainer) -> None:
    from ..train.generate import LoadedRun, generate_text

    first = trainer.data.validation[0].tolist()
    prompt = trainer.tokenizer.decode(first[:16], skip_special_tokens=True)
    run = LoadedRun(
        trainer.model,
        trainer.tokenizer,
        trainer.cfg,
        trainer.objective.kind,
        trainer.objective.mask_token_id,
        trainer.progress.last_checkpoint,
    )
    trainer.model.eval()
    text = generate_text(run, prompt, max_new_tokens=120, seed=trainer.cfg.training.seed)
    console.rule("sample (prompt: the first 16 validation tokens)")
    console.print(escape(text), markup=False)
    console.rule()


def generate(
    run_dir: Path = typer.Argument(..., help="Run directory (its latest checkpoint) or a checkpoint directory."),
    prompt: str = typer.Option("", "--prompt", "-p", help="Text to continue."),
    max_new_tokens: int = typer.Option(100, "--max-new-tokens", "-n", min=1, help="Tokens to generate."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", min=0.0, help="Sampling temperature; 0 is greedy."),
    top_k: int = typer.Option(50, "--top-k", min=0, help="Sample among the k most likely tokens; 0 = all."),
    steps: int = typer.Option(32, "--steps", min=1, help="Unmasking rounds (masked-diffusion models)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps."),
) -> None:
    """Sample from a trained model: left to right, or by iterative unmasking for a masked-diffusion model."""
    from ..train.generate import GenerateError, generate_text, load_run

    console = Console(highlight=False, soft_wrap=True)
    try:
        run = load_run(run_dir, device)
    except (GenerateError, *_user_errors()) as err:
        raise _fail(console, str(err)) from None
    text = generate_text(
        run, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k or None, steps=steps, seed=seed
    )
    typer.echo(text)


@tokenizer_app.command("train")
def tokenizer_train(
    path: Path = typer.Argument(..., help="Config file: its data section is the training text."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the tokenizer to."),
    vocab_size: int = typer.Option(None, "--vocab-size", min=260, help="Vocabulary size; default model.vocab_size."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE...]", help="Overrides."),
) -> None:
    """Train a byte-level BPE on the config's training documents, with data.special_tokens; save it to OUTPUT."""
    from ..train.data import training_documents
    from ..train.tokenizer import train_tokenizer

    console = Console(highlight=False, soft_wrap=True)
    cfg = _load_one(path, overrides or [], []).config
    size = vocab_size or cfg.model.vocab_size
    if size is None:
        raise _fail(console, "give --vocab-size, or set model.vocab_size in the config", 2)
    try:
        with console.status(f"training a {size}-token byte-level BPE"):
            tok = train_tokenizer(training_documents(cfg), size, cfg.data.special_tokens or (), output)
    except _user_errors() as err:
        raise _fail(console, str(err)) from None
    console.print(
        f"wrote {escape(str(output))}: {len(tok)} tokens. Use it with data.tokenizer_path: {escape(str(output))}"
    )


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(plan)
    app.command()(generate)
    app.add_typer(tokenizer_app, name="tokenizer")
