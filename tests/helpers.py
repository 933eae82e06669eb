"""Helpers shared by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write(where: Path, text: str, name: str | None = None) -> Path:
    """Write dedented YAML `text` to `where` (a file path), or to `where/name` (default `config.yaml`) for a folder."""
    path = where / (name or "config.yaml") if name or where.is_dir() else where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path
