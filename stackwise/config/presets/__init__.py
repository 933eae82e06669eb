"""Built-in config groups: `model=`, `training=`, `distributed=`, `data=`, `distillation=` options.

Each option is a flat YAML file of one section, in canonical names; its first comment line describes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..aliases import GROUPS

BUILTIN = Path(__file__).parent


@dataclass(frozen=True)
class Preset:
    group: str
    option: str
    description: str
    source: str
    path: Path


def _description(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def list_presets(config_dirs: Sequence[str | Path] = ()) -> list[Preset]:
    """Every group option found in `config_dirs` and the built-ins (a user folder shadows a built-in)."""
    found: dict[tuple[str, str], Preset] = {}
    for base, source in [*((Path(d), str(d)) for d in config_dirs), (BUILTIN, "built-in")]:
        for group in GROUPS:
            for path in sorted((base / group).glob("*.y*ml")) if (base / group).is_dir() else []:
                found.setdefault((group, path.stem), Preset(group, path.stem, _description(path), source, path))
    return sorted(found.values(), key=lambda p: (GROUPS.index(p.group), p.option))
