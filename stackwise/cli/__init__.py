"""The `stackwise` command: thin typer commands over library code (see `stackwise --help`)."""

from __future__ import annotations

import typer

from .. import __version__
from .config_commands import register
from .model_commands import model_app
from .train_commands import register as register_train

app = typer.Typer(
    name="stackwise",
    help="Train language models from one validated YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stackwise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train language models from one validated YAML file."""


register(app)
register_train(app)
app.add_typer(model_app, name="model")


def main() -> None:
    """Console-script entry point."""
    app()
