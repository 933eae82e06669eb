"""`stackwise model summary`: parameters per component, FLOPs per token and a training-memory estimate."""

from __future__ import annotations

from pathlib import Path

import typer

from .config_commands import _load_one

model_app = typer.Typer(help="Inspect the model a config describes.", no_args_is_help=True)


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@model_app.command()
def summary(
    path: Path = typer.Argument(..., help="Config file."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE...]", help="Overrides and group choices."),
    config_dir: list[Path] = typer.Option([], "--config-dir", "-C", help="Extra folder of config groups."),
) -> None:
    """Parameters (total, trainable, active per token), FLOPs per token and memory, without building the model."""
    from rich.console import Console
    from rich.table import Table

    from ..models.summary import summarize

    cfg = _load_one(path, overrides or [], config_dir).config
    s = summarize(cfg)  # type: ignore[arg-type]
    table = Table("component", "parameters", "trainable", "active / token", "note", title=f"Model: {path}")
    for c in s.components:
        table.add_row(c.name, f"{c.params:,}", f"{c.trainable:,}", f"{c.active_per_token:,}", c.note)
    table.add_row("total", f"{s.total:,}", f"{s.trainable:,}", f"{s.active_per_token:,}", _human(s.total), style="bold")
    console = Console()
    console.print(table)
    t = cfg.training  # type: ignore[union-attr]
    console.print(
        f"FLOPs per token: forward {_human(s.forward_flops_per_token)}, training {_human(s.training_flops_per_token)} "
        f"(seq_len {t.seq_len})"
    )
    memory = Table(
        "memory (estimate)",
        "bytes",
        title=f"batch_size {t.batch_size}, precision {t.precision}, optimizer {t.optimizer}",
    )
    for name, value in s.memory.items():
        memory.add_row(name, _bytes(value))
    memory.add_row("total", _bytes(sum(s.memory.values())), style="bold")
    console.print(memory)
