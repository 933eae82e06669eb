"""Problems found in a config: where they are (file, line, column, key) and what is wrong."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Location:
    """Where a value was written: a file (or `<command line>`), 1-based line and column, and the key as written."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = None


@dataclass(frozen=True)
class Issue:
    """One problem: the canonical dotted path, a message, its severity and where it was written."""

    path: str
    message: str
    severity: Severity = "error"
    file: str | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = None
    code: str | None = None  # the rule that raised it, when a rule did

    def at(self, loc: Location | None) -> Issue:
        """This issue placed at `loc` (fields already set are kept)."""
        if loc is None:
            return self
        return replace(
            self,
            file=self.file or loc.file,
            line=self.line if self.line is not None else loc.line,
            column=self.column if self.column is not None else loc.column,
            key=self.key or loc.key,
        )

    def where(self) -> str:
        """`file:line:column` (as much of it as is known)."""
        parts = [self.file or "<config>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def target(self) -> str:
        """The dotted path, and the key as the user wrote it when that differs."""
        written = f" (written as `{self.key}`)" if self.key and self.key != self.path else ""
        return f"{self.path}{written}"

    def __str__(self) -> str:
        target = f"{self.target()}: " if self.path else ""
        return f"{self.where()}: {self.severity}: {target}{self.message}"

    def to_json(self) -> dict[str, object]:
        """The JSON form used by `stackwise validate --format json`."""
        return {"path": self.path, "line": self.line, "column": self.column, "message": self.message}


class ConfigError(ValueError):
    """A config could not be loaded; `issues` holds every problem found (errors and warnings)."""

    def __init__(self, issues: Sequence[Issue]):
        self.issues = list(issues)
        errors = [i for i in self.issues if i.severity == "error"]
        lines = "\n".join(f"  {i}" for i in errors)
        super().__init__(f"{len(errors)} error(s) in config:\n{lines}")


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a mistyped word, if one is close enough."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.7)
    return matches[0] if matches else None


def dotted(path: Sequence[object]) -> str:
    """`("data", "datasets", 0, "weight")` -> `data.datasets[0].weight`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
