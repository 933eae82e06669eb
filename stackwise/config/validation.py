"""Validate a composed canonical tree: every field error with its location, then every rule that can still run.

Field errors do not stop the rules: each bad value is dropped (its default comes back) and the tree is
validated again, until it validates; rules that read a dropped field are skipped rather than misreport.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .aliases import model_at
from .errors import Issue, Location, did_you_mean, dotted
from .schema import SKIP_RULES, StackwiseConfig

Path_ = tuple[Any, ...]


def dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple] = set()
    out = []
    for issue in issues:
        key = (issue.path, issue.message, issue.file, issue.line)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def locate(path: Path_, locs: dict[Path_, Location]) -> Location | None:
    """Where `path` was written; for a path set only through its children (an alias), the first child."""
    if path and path not in locs:
        children = [loc for p, loc in locs.items() if p[: len(path)] == path and loc.line is not None]
        if children:
            return min(children, key=lambda loc: (loc.file or "", loc.line or 0))
    for end in range(len(path), 0, -1):
        if path[:end] in locs:
            return locs[path[:end]]
    return None


def validate_tree(tree: dict[str, Any], locs: dict[Path_, Location]) -> tuple[StackwiseConfig | None, list[Issue]]:
    """Validate a canonical tree; report every field error, then every rule whose fields are valid."""
    from .rules import run_rules

    issues: list[Issue] = []
    data = copy.deepcopy(tree)
    removed: list[Path_] = []
    config: StackwiseConfig | None = None
    while config is None:
        try:
            config = StackwiseConfig.model_validate(data, context={SKIP_RULES: True})
        except ValidationError as exc:
            # Paths first, against the data as validated; only then drop what failed.
            found = [pydantic_issue(err, data) for err in exc.errors()]
            targets = []
            for (path, issue), err in zip(found, exc.errors(), strict=True):
                if err["type"] == "missing" and any(path[: len(r)] == r for r in removed):
                    targets.append(path[:-1])  # we dropped it: drop the entry that needed it
                    continue
                issues.append(issue.at(locate(path, locs)))
                targets.append(_removal_target(data, path))
            progress = False
            for target in sorted(set(targets), key=len, reverse=True):
                progress |= _remove(data, target)
                removed.append(target)
            if not progress:  # nothing left to drop: report what we have, without the rules
                return None, issues
    for issue in run_rules(config, removed=removed):
        loc = locate(parse_dotted(issue.path), locs)
        if issue.code == "typical_ranges" and loc is not None and (loc.file or "").startswith("<built-in preset"):
            continue  # the built-in presets are the guides' own sizes; do not warn about them
        issues.append(issue.at(loc))
    return config, issues


def _data_path(loc: tuple, data: Any) -> Path_:
    """The prefix of a pydantic error location that exists in the data (drops union/key tags)."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part.isdigit() and int(part) in node:
            part = int(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif isinstance(part, str) and (part.startswith("[") or part in ("function-after", "function-before")):
            continue
        else:
            path.append(part)
            break
        path.append(part)
    return tuple(path)


def pydantic_issue(err: Mapping[str, Any], data: Any) -> tuple[Path_, Issue]:
    path = _data_path(tuple(err["loc"]), data)
    kind = err["type"]
    value = err.get("input")
    name = dotted(path)
    if kind == "extra_forbidden":
        key = str(path[-1])
        cls = model_at(path[:-1])
        fields = list(cls.model_fields) if cls else []
        guess = did_you_mean(key, fields)
        hint = f"; did you mean `{guess}`?" if guess else (f" (allowed: {', '.join(fields)})" if fields else "")
        return path, Issue(name, f"unknown key `{key}` in `{dotted(path[:-1])}`{hint}")
    message = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    message = message.replace("a valid tuple", "a list").replace("a valid dictionary", "a mapping")
    if kind == "missing":
        return path, Issue(name, "this setting is required")
    if isinstance(value, dict) and kind not in ("value_error", "assertion_error"):
        keys = ", ".join(map(str, list(value)[:6]))
        return path, Issue(name, f"expected a single value, but a mapping was given (keys: {keys})")
    if kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        guess = did_you_mean(str(value), options) if isinstance(value, str) else None
        hint = f"; did you mean `{guess}`?" if guess else ""
        return path, Issue(name, f"{value!r} is not allowed; expected one of: {', '.join(options)}{hint}")
    if "[key]" in tuple(err["loc"]):
        return path, Issue(name, f"key {value!r}: {message}")
    if value is not None and not isinstance(value, (dict, list)) and kind != "value_error":
        message = f"{message} (got {value!r})"
    return path, Issue(name, message)


def _removal_target(data: Any, path: Path_) -> Path_:
    """What to drop so the rest can be validated: a bad list item takes its whole list (its default comes back)."""
    node = data
    for i, part in enumerate(path):
        if isinstance(node, list):
            return path[:i]
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return path


def _remove(data: Any, path: Path_) -> bool:
    """Drop `path` from `data`; whether anything was dropped."""
    if not path:
        had = bool(data)
        data.clear()
        return had
    node = data
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def parse_dotted(text: str) -> Path_:
    out: list[Any] = []
    for chunk in text.split("."):
        name, _, rest = chunk.partition("[")
        if name:
            out.append(name)
        for idx in rest.replace("]", "").split("[") if rest else []:
            out.append(int(idx) if idx.lstrip("-").isdigit() else idx)
    return tuple(out)
