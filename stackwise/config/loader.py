"""Compose and validate a config: `defaults:` lists, config groups, presets, `key=value` overrides.

Order of composition (later wins, field by field; lists are replaced whole):
1. the file's `defaults:` entries before `_self_`, 2. the file itself (`_self_`, last when not listed),
3. the `defaults:` entries after `_self_`, 4. groups chosen on the command line (`model=tiny`) that the
`defaults:` list does not name (those it names are replaced in place), 5. `key.path=value` overrides.

Groups are looked up as `<dir>/<group>/<option>.yaml` in the config file's folder, then in each
`config_dirs` folder (and `$STACKWISE_CONFIG_DIR`), then in the built-in presets.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aliases import GROUPS, SECTION_ALIASES, canonicalize, infer_group
from .errors import ConfigError, Issue, Location, did_you_mean
from .schema import SECTIONS, StackwiseConfig
from .validation import dedupe, validate_tree
from .yamlio import Doc, interpolate, load_yaml_file, parse_scalar

Path_ = tuple[Any, ...]
PRESETS_DIR = Path(__file__).parent / "presets"
COMMAND_LINE = "<command line>"


@dataclass
class LoadResult:
    """The outcome of loading one config: the config (None when any error) and every issue found."""

    file: str
    config: StackwiseConfig | None = None
    issues: list[Issue] = field(default_factory=list)
    kind: str = "config"  # "config" or "data_mixes"

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def valid(self) -> bool:
        return not self.errors

    def unwrap(self) -> StackwiseConfig:
        """The config, or `ConfigError` with every issue."""
        if self.errors:
            raise ConfigError(self.issues)
        if self.config is None:
            raise ConfigError([Issue("", f"{self.file} is a {self.kind} file, not a stackwise config", file=self.file)])
        return self.config


@dataclass
class _Layer:
    """One composed piece: a canonical tree and the location of each of its paths."""

    tree: dict[str, Any]
    locs: dict[Path_, Location]


class _Composer:
    def __init__(self, search_dirs: Sequence[Path]):
        self.search_dirs = list(search_dirs)
        self.issues: list[Issue] = []
        self.layers: list[_Layer] = []

    def add_doc(self, doc: Doc, group: str | None = None) -> None:
        self.issues.extend(doc.issues)
        tree, locs, issues = canonicalize(doc, group)
        self.issues.extend(issues)
        self.layers.append(_Layer(tree, locs))

    def options(self, group: str) -> list[str]:
        names: set[str] = set()
        for base in self.search_dirs:
            folder = base / group
            if folder.is_dir():
                names.update(p.stem for p in folder.glob("*.y*ml"))
        return sorted(names)

    def find(self, group: str, option: str) -> Path | None:
        candidate = Path(option).expanduser()
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
        for base in self.search_dirs:
            for suffix in (".yaml", ".yml"):
                path = base / group / f"{option}{suffix}"
                if path.is_file():
                    return path
        return None

    def add_group(self, group: str, option: Any, where: Location) -> None:
        if group not in GROUPS:
            allowed = ", ".join(GROUPS)
            self.issues.append(Issue(group, f"unknown config group `{group}`; groups: {allowed}").at(where))
            return
        if option is None:
            return
        path = self.find(group, str(option))
        if path is None:
            available = self.options(group)
            guess = did_you_mean(str(option), available)
            hint = f"; did you mean `{guess}`?" if guess else ""
            self.issues.append(
                Issue(group, f"no `{group}` option `{option}`{hint} (available: {', '.join(available) or 'none'})").at(
                    where
                )
            )
            return
        try:
            doc = load_yaml_file(_display(path))
            if path.resolve().is_relative_to(PRESETS_DIR):
                doc = _relabel(doc, f"<built-in preset {group}={path.stem}>")
        except OSError as exc:
            self.issues.append(Issue(group, f"cannot read {path}: {exc.strerror}").at(where))
            return
        self.add_doc(doc, group)

    def merged(self) -> tuple[dict[str, Any], dict[Path_, Location]]:
        tree: dict[str, Any] = {}
        locs: dict[Path_, Location] = {}
        for layer in self.layers:
            _merge(tree, layer.tree, (), locs, layer.locs)
        return tree, locs


def _display(path: Path) -> Path:
    """`path` relative to the working directory when it is below it (as users wrote their own paths)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def _relabel(doc: Doc, label: str) -> Doc:
    """The same document, reported under another file name."""
    from dataclasses import replace

    marks = {path: replace(loc, file=label) for path, loc in doc.marks.items()}
    return Doc(label, doc.data, marks, [replace(i, file=label) for i in doc.issues])


def _merge(dst: dict, src: dict, path: Path_, dst_locs: dict, src_locs: dict) -> None:
    for key, value in src.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            if here in src_locs:
                dst_locs[here] = src_locs[here]
            _merge(dst[key], value, here, dst_locs, src_locs)
            continue
        dst[key] = copy.deepcopy(value)
        for stale in [p for p in dst_locs if p[: len(here)] == here]:
            del dst_locs[stale]
        dst_locs.update({p: loc for p, loc in src_locs.items() if p[: len(here)] == here})


def _search_dirs(config_file: Path | None, config_dirs: Sequence[str | Path]) -> list[Path]:
    dirs: list[Path] = []
    if config_file is not None:
        dirs.append(config_file.parent)
    dirs.extend(Path(d) for d in config_dirs)
    env = os.environ.get("STACKWISE_CONFIG_DIR")
    if env:
        dirs.extend(Path(d) for d in env.split(os.pathsep) if d)
    dirs.append(PRESETS_DIR)
    return dirs


def _defaults_list(doc: Doc, composer: _Composer) -> tuple[list[tuple[str, Any, Location]], int]:
    """The `defaults:` entries as (group, option, location), and the index where `_self_` goes."""
    data = doc.data if isinstance(doc.data, dict) else {}
    raw = data.get("defaults")
    if raw is None:
        return [], 0
    where = doc.loc(("defaults",))
    if not isinstance(raw, list):
        composer.issues.append(Issue("defaults", "`defaults` must be a list like `- model: tiny`").at(where))
        return [], 0
    entries: list[tuple[str, Any, Location]] = []
    self_at: int | None = None
    for i, item in enumerate(raw):
        loc = doc.loc(("defaults", i))
        if item == "_self_":
            self_at = len(entries)
        elif isinstance(item, dict) and len(item) == 1:
            group, option = next(iter(item.items()))
            group = str(group)
            if group.startswith("override "):
                target = group.removeprefix("override ").strip()
                if target.startswith("hydra/"):
                    composer.issues.append(
                        Issue(
                            "defaults",
                            f"`{group}` configures Hydra itself, which stackwise does not use; remove this entry",
                        ).at(loc)
                    )
                    continue
                group = target
            entries.append((group, option, loc))
        else:
            composer.issues.append(
                Issue("defaults", f"defaults entry {item!r} must be `_self_` or `group: option`").at(loc)
            )
    return entries, len(entries) if self_at is None else self_at


def _split_overrides(
    overrides: Sequence[str], composer: _Composer
) -> tuple[dict[str, tuple[str, Location]], list[tuple[str, Any, Location]]]:
    groups: dict[str, tuple[str, Location]] = {}
    values: list[tuple[str, Any, Location]] = []
    for arg in overrides:
        loc = Location(COMMAND_LINE, None, None, arg)
        key, eq, raw = arg.partition("=")
        key = key.strip()
        if not eq or not key or " " in key:
            composer.issues.append(
                Issue("", f"override `{arg}` must look like `key.path=value` or `group=option`").at(loc)
            )
            continue
        try:
            raw = str(interpolate(raw)) if "${" in raw else raw
        except ValueError as exc:
            composer.issues.append(Issue(key, str(exc)).at(loc))
            continue
        if "." not in key and key in GROUPS and key not in SECTION_ALIASES:
            groups[key] = (raw.strip(), loc)
        else:
            values.append((key, parse_scalar(raw), loc))
    return groups, values


def _override_doc(key: str, value: Any, loc: Location) -> Doc:
    parts = key.split(".")
    data: Any = value
    for part in reversed(parts):
        data = {part: data}
    return Doc(COMMAND_LINE, data, {(): loc})


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, config_dirs: Sequence[str | Path] = ()
) -> LoadResult:
    """Load one YAML file (a full config, a flat group file, or a `datasets.yaml` of data mixes)."""
    file = Path(path)
    doc = load_yaml_file(file)  # OSError propagates: an unreadable file is a usage error
    if isinstance(doc.data, dict) and "data_mixes" in doc.data:
        from .rules import check_data_mixes_doc

        return LoadResult(str(path), None, [*doc.issues, *check_data_mixes_doc(doc)], kind="data_mixes")
    return _compose(doc, overrides, _search_dirs(file.resolve(), config_dirs), file.resolve().parent.name)


def load_mapping(
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    values: Mapping[str, Any] | None = None,
    config_dirs: Sequence[str | Path] = (),
) -> LoadResult:
    """Validate an in-memory mapping in any supported layout, as if it were a YAML file.

    `overrides` are command-line style strings; `values` are `{"dotted.key": value}` applied last, as given
    (not parsed as YAML).
    """
    doc = Doc("<dict>", copy.deepcopy(dict(data)), {(): Location("<dict>")})
    extra = [(key, value, Location("<updated>", None, None, key)) for key, value in (values or {}).items()]
    return _compose(doc, overrides, _search_dirs(None, config_dirs), None, extra)


def _compose(
    doc: Doc,
    overrides: Sequence[str],
    search_dirs: list[Path],
    folder: str | None,
    values: Sequence[tuple[str, Any, Location]] = (),
) -> LoadResult:
    composer = _Composer(search_dirs)
    data = doc.data if doc.data is not None else {}
    if doc.data is None and not doc.issues:
        composer.issues.append(
            Issue("", "the file is empty; every setting takes its default", "warning").at(doc.loc(()))
        )
    structural = (
        [str(k) in SECTIONS or str(k) in SECTION_ALIASES or k == "defaults" for k in data]
        if isinstance(data, dict)
        else []
    )
    # A file in a group folder (`training/stage3.yaml`) is flat even when it has a key named like a section
    # (004's training files have `logging:`), unless every key is structural.
    nested = not isinstance(data, dict) or not data or (any(structural) and (folder not in GROUPS or all(structural)))
    cli_groups, cli_values = _split_overrides(overrides, composer)
    size = data.get("model_size") if isinstance(data, dict) else None
    if size is not None and "model" not in cli_groups:  # 002's `model_size: large` picks a model preset
        cli_groups["model"] = (str(size), doc.loc(("model_size",)))
    if nested:
        entries, self_at = _defaults_list(doc, composer)
        chosen = {group for group, _, _ in entries}
        for i, (group, _option, _loc) in enumerate(entries):
            if group in cli_groups:
                entries[i] = (group, *cli_groups[group])
        for group, (option, loc) in cli_groups.items():
            if group not in chosen:
                entries.append((group, option, loc))
        ordered: list[Any] = [*entries[:self_at], doc, *entries[self_at:]]
        for item in ordered:
            if item is doc:
                composer.add_doc(doc)
            else:
                composer.add_group(*item)
    else:
        group = infer_group([str(k) for k in data if k != "model_size"], folder)
        # When no section fits, read it as a full config: each key is then reported as an unknown
        # top-level key, with "did you mean `model`" or "belongs under `training.`".
        composer.add_doc(doc, group)
        for group_name, (option, loc) in cli_groups.items():
            composer.add_group(group_name, option, loc)
    for key, value, loc in [*cli_values, *values]:
        composer.add_doc(_override_doc(key, value, loc))
    tree, locs = composer.merged()
    config, issues = validate_tree(tree, locs)
    all_issues = dedupe([*composer.issues, *issues])
    all_issues.sort(key=lambda i: (i.severity != "error", i.file != doc.file, i.file or "", i.line or 0, i.column or 0))
    ok = not any(i.severity == "error" for i in all_issues)
    return LoadResult(doc.file, config if ok else None, all_issues)
