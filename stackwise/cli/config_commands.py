"""Config commands: `validate`, `show`, `migrate`, `schema`, `presets`.

Exit codes: 0 all valid; 1 any config invalid (or with warnings under `--strict`); 2 usage errors and
unreadable files.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from enum import Enum
from pathlib import Path

import typer

from ..config.errors import Issue
from ..config.loader import LoadResult, load_config

GLOB_CHARS = set("*?[")


class Format(str, Enum):
    text = "text"
    json = "json"
    github = "github"


class SchemaFormat(str, Enum):
    json = "json"
    markdown = "markdown"


def _yaml_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files) if f.endswith((".yaml", ".yml")))
    return found


def split_targets(targets: list[str]) -> tuple[list[Path], list[str], list[str]]:
    """Paths to validate (files, directory contents, glob matches), `key=value` overrides, and missing paths."""
    paths: list[Path] = []
    overrides: list[str] = []
    missing: list[str] = []
    for target in targets:
        path = Path(target)
        if path.is_dir():
            paths.extend(_yaml_files(path))
        elif path.exists():
            paths.append(path)
        elif "=" in target:  # before globs: `training.betas=[0.9,0.95]` is an override, not a pattern
            overrides.append(target)
        elif GLOB_CHARS & set(target):
            matches = [Path(m) for m in sorted(glob.glob(target, recursive=True))]
            files = [m for m in matches if m.is_file()] + [f for m in matches if m.is_dir() for f in _yaml_files(m)]
            paths.extend(files) if files else missing.append(target)
        else:
            missing.append(target)
    return paths, overrides, missing


def _check_overrides(overrides: list[str]) -> None:
    """Malformed `key=value` arguments are usage errors (exit 2), like an unknown option."""
    for arg in overrides:
        key, _, value = arg.partition("=")
        if not key or " " in key or any(not part for part in key.split(".")) or ("." not in key and not value):
            typer.echo(f"stackwise: bad override `{arg}`: expected key.path=value or group=option", err=True)
            raise typer.Exit(2)


def _load(path: Path, overrides: list[str], config_dirs: list[Path]) -> tuple[LoadResult, bool]:
    """(result, readable)."""
    try:
        return load_config(path, overrides, config_dirs=config_dirs), True
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return LoadResult(str(path), None, [Issue("", f"cannot read file: {reason}", file=str(path))]), False


def _github_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _print_text(results: list[LoadResult], strict: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    for result in results:
        label = "valid" if result.valid and not (strict and result.warnings) else "invalid"
        style = "green" if label == "valid" else "red"
        counts = f"{len(result.errors)} error(s), {len(result.warnings)} warning(s)"
        kind = "" if result.kind == "config" else f" ({result.kind.replace('_', ' ')})"
        console.print(f"[bold {style}]{label}[/] {escape(result.file)}{kind}: {counts}")
        for issue in result.issues:
            colour = "red" if issue.severity == "error" else "yellow"
            target = f"[bold]{escape(issue.target())}[/]: " if issue.path else ""
            console.print(f"  {escape(issue.where())}: [{colour}]{issue.severity}[/]: {target}{escape(issue.message)}")
    bad = sum(1 for r in results if not r.valid or (strict and r.warnings))
    console.print(f"{len(results)} file(s) checked, {bad} invalid")


def _print_json(results: list[LoadResult], strict: bool) -> None:
    def issue_json(issue: Issue) -> dict[str, object]:
        return {**issue.to_json(), "file": issue.file}

    payload = {
        "files": [
            {
                "file": r.file,
                "kind": r.kind,
                "valid": r.valid and not (strict and r.warnings),
                "errors": [issue_json(i) for i in r.errors],
                "warnings": [issue_json(i) for i in r.warnings],
            }
            for r in results
        ]
    }
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _print_github(results: list[LoadResult]) -> None:
    for result in results:
        for issue in result.issues:
            file = issue.file or result.file
            props = [] if file.startswith("<") else [f"file={_github_escape(file, True)}"]
            if issue.line is not None:
                props.append(f"line={issue.line}")
            if issue.column is not None:
                props.append(f"col={issue.column}")
            props.append(f"title={_github_escape('stackwise ' + (issue.path or 'config'), True)}")
            kind = "error" if issue.severity == "error" else "warning"
            sys.stdout.write(f"::{kind} {','.join(props)}::{_github_escape(issue.message)}\n")


def validate(
    targets: list[str] = typer.Argument(
        ..., metavar="PATH... [KEY=VALUE...]", help="Config files, folders or globs, then overrides."
    ),
    fmt: Format = typer.Option(Format.text, "--format", "-f", help="text, json, or github (workflow annotations)."),
    strict: bool = typer.Option(False, "--strict", help="Treat warnings as failures."),
    config_dir: list[Path] = typer.Option(
        [], "--config-dir", "-C", help="Extra folder of config groups (model/, training/, ...)."
    ),
) -> None:
    """Validate config files without importing torch; exit 1 when any is invalid."""
    paths, overrides, missing = split_targets(targets)
    _check_overrides(overrides)
    results = []
    unreadable = False
    for target in missing:
        results.append(LoadResult(target, None, [Issue("", "no such file, folder or matching glob", file=target)]))
        unreadable = True
    for path in paths:
        result, readable = _load(path, overrides, config_dir)
        unreadable |= not readable
        results.append(result)
    if not results:
        typer.echo("stackwise validate: no config files given", err=True)
        raise typer.Exit(2)
    {
        Format.text: lambda: _print_text(results, strict),
        Format.json: lambda: _print_json(results, strict),
        Format.github: lambda: _print_github(results),
    }[fmt]()
    if unreadable:
        raise typer.Exit(2)
    if any(not r.valid or (strict and r.warnings) for r in results):
        raise typer.Exit(1)


def _load_one(path: Path, overrides: list[str], config_dirs: list[Path]) -> LoadResult:
    if not path.is_file():
        typer.echo(f"stackwise: {path}: no such file", err=True)
        raise typer.Exit(2)
    _check_overrides(overrides)
    result, readable = _load(path, overrides, config_dirs)
    if not readable or not result.valid or result.config is None:
        if result.config is None and result.valid:
            result.issues.append(
                Issue("", f"a {result.kind.replace('_', ' ')} file, not a stackwise config", file=result.file)
            )
        for issue in result.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2 if not readable else 1)
    for issue in result.warnings:
        typer.echo(str(issue), err=True)
    return result


def show(
    path: Path = typer.Argument(..., help="Config file."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE...]", help="Overrides and group choices."),
    config_dir: list[Path] = typer.Option([], "--config-dir", "-C", help="Extra folder of config groups."),
) -> None:
    """Print the resolved canonical config, every default filled in."""
    result = _load_one(path, overrides or [], config_dir)
    sys.stdout.write(result.config.to_yaml())  # type: ignore[union-attr]


def migrate(
    path: Path = typer.Argument(..., help="Config file in any supported layout."),
    overrides: list[str] = typer.Argument(None, metavar="[KEY=VALUE...]", help="Overrides and group choices."),
    config_dir: list[Path] = typer.Option([], "--config-dir", "-C", help="Extra folder of config groups."),
) -> None:
    """Print the config in canonical (Stack-Wise) names: only what it sets, groups and aliases resolved."""
    from ..config.yamlio import dump_yaml

    result = _load_one(path, overrides or [], config_dir)
    data = result.config.model_dump(mode="json", exclude_unset=True)  # type: ignore[union-attr]
    sys.stdout.write(f"# Migrated from {path} by `stackwise migrate`.\n" + dump_yaml(data))


def schema(
    fmt: SchemaFormat = typer.Option(
        SchemaFormat.json, "--format", "-f", help="json (JSON Schema, draft-07) or markdown."
    ),
    kind: str = typer.Option(
        "config",
        "--kind",
        "-k",
        help="config, data_mixes, or a group: model, training, data, distributed, distillation.",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print the JSON Schema (for editors' YAML language servers) or the Markdown reference."""
    from ..config.export import SCHEMA_KINDS, json_schema_text, markdown_reference

    if kind not in SCHEMA_KINDS:
        typer.echo(f"stackwise schema: unknown --kind {kind}; choose from {', '.join(SCHEMA_KINDS)}", err=True)
        raise typer.Exit(2)
    text = json_schema_text(kind) if fmt is SchemaFormat.json else markdown_reference()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def presets(
    config_dir: list[Path] = typer.Option([], "--config-dir", "-C", help="Extra folder of config groups."),
) -> None:
    """List the config groups and their options (built in, and from --config-dir)."""
    from rich.console import Console
    from rich.table import Table

    from ..config.presets import list_presets

    table = Table("group", "option", "description", "from", title="Config groups: select with GROUP=OPTION")
    for entry in list_presets(config_dir):
        table.add_row(entry.group, entry.option, entry.description, entry.source)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(show)
    app.command()(migrate)
    app.command()(schema)
    app.command()(presets)
