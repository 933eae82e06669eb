"""YAML in and out, with the positions of every key and the pitfalls of PyYAML handled.

- `1e-4` is a float (PyYAML's YAML 1.1 resolver reads it as a string);
- a key given twice in one mapping is an error naming both lines;
- a syntax error reports its line and column;
- `${env:VAR,default}` is replaced by the environment variable (the default when unset).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Issue, Location, dotted

Path_ = tuple[Any, ...]

# YAML 1.2 core-schema floats, which include exponents without a dot (`1e-4`, `3E5`).
_FLOAT_12 = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$")
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


@dataclass
class Doc:
    """One loaded YAML document: its data and the location of every key and list item, by path."""

    file: str
    data: Any
    marks: dict[Path_, Location] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def loc(self, path: Path_) -> Location:
        """Location of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.marks:
                return self.marks[path[:end]]
        return Location(self.file)


def load_yaml_text(text: str, file: str) -> Doc:
    """Parse YAML text into a `Doc`; syntax errors and duplicate keys become issues, not exceptions."""
    doc = Doc(file, None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _construct(loader, node, (), doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        doc.issues.append(
            Issue(
                "",
                f"YAML syntax error: {problem}",
                file=file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        )
    except yaml.YAMLError as exc:
        doc.issues.append(Issue("", f"YAML error: {exc}", file=file))
    finally:
        loader.dispose()
    doc.marks.setdefault((), Location(file, 1, 1))
    return doc


def load_yaml_file(path: str | Path) -> Doc:
    """Read and parse a YAML file (OSError propagates: an unreadable file is a usage error)."""
    return load_yaml_text(Path(path).read_text(encoding="utf-8"), str(path))


def _mark(node: yaml.Node, file: str, key: str) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1, key)


def _construct(loader: _Loader, node: yaml.Node, path: Path_, doc: Doc) -> Any:
    if isinstance(node, yaml.MappingNode):
        explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys; explicit keys may override merged ones
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        first_node: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                doc.issues.append(
                    Issue(
                        dotted(path),
                        "mapping keys must be plain scalars",
                        file=doc.file,
                        line=key_node.start_mark.line + 1,
                        column=key_node.start_mark.column + 1,
                    )
                )
                continue
            line = key_node.start_mark.line + 1
            child = (*path, key)
            ident = (type(key), key)  # `1` and `true` are different keys, though 1 == True in Python
            if ident in first_node and first_node[ident] in explicit and id(key_node) in explicit:
                doc.issues.append(
                    Issue(
                        dotted(child),
                        f"duplicate key `{key}`: given on line {first_line[key]} and again on line "
                        f"{line}; YAML keeps only the last, so remove one",
                        file=doc.file,
                        line=line,
                        column=key_node.start_mark.column + 1,
                        key=dotted(child),
                    )
                )
            first_line.setdefault(key, line)
            first_node[ident] = id(key_node)
            doc.marks[child] = _mark(key_node, doc.file, dotted(child))
            out[key] = _construct(loader, value_node, child, doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            doc.marks[child] = _mark(item, doc.file, dotted(child))
            items.append(_construct(loader, item, child, doc))
        return items
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:
        try:
            value = interpolate(value)
        except ValueError as exc:
            loc = doc.marks.get(path) or _mark(node, doc.file, dotted(path))
            doc.issues.append(Issue(dotted(path), str(exc)).at(loc))
    return value


def interpolate(text: str) -> Any:
    """Replace `${env:VAR}` / `${env:VAR,default}` (also `${oc.env:...}`); a whole-value reference is parsed as YAML."""

    def lookup(expr: str) -> str:
        kind, _, rest = expr.partition(":")
        if kind.strip() not in ("env", "oc.env"):
            raise ValueError(
                f"unsupported interpolation `${{{expr}}}`: only `${{env:VAR}}` and `${{env:VAR,default}}` are supported"
            )
        name, comma, default = rest.partition(",")
        name = name.strip()
        if name in os.environ:
            return os.environ[name]
        if comma:
            return default.strip()
        raise ValueError(f"environment variable {name} is not set and `${{{expr}}}` gives no default")

    whole = _INTERPOLATION.fullmatch(text.strip())
    if whole:
        return parse_scalar(lookup(whole.group(1)))
    return _INTERPOLATION.sub(lambda m: lookup(m.group(1)), text)


def parse_scalar(text: str) -> Any:
    """Parse a command-line or interpolated value as YAML (`1e-4` -> float, `[1, 2]` -> list, `null` -> None)."""
    if text == "":
        return ""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError:
        return text


def dump_yaml(data: Any) -> str:
    """Block-style YAML that keeps key order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)
