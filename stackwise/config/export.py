"""The schema for people and editors: a draft-07 JSON Schema and the Markdown config reference.

Draft-07 because that is the newest draft that yaml-language-server (VS Code's YAML extension, and
the editors built on it) fully supports. Alias keys are listed as properties too, so that an editor
accepts every layout stackwise loads.
"""

from __future__ import annotations

import json
from typing import Any

from .aliases import KEY_ALIASES, SECTION_ALIASES
from .errors import dotted
from .schema import SECTIONS, StackwiseConfig


def _draft07(node: Any) -> Any:
    """Rewrite pydantic's 2020-12 output for draft-07: `$defs` -> `definitions`, `prefixItems` -> `items`."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$defs":
                out["definitions"] = _draft07(value)
            elif key == "$ref" and isinstance(value, str):
                out[key] = value.replace("#/$defs/", "#/definitions/")
            elif key == "prefixItems":
                out["items"] = _draft07(value)
            else:
                out[key] = _draft07(value)
        if "prefixItems" in node and "items" in node:
            out["additionalItems"] = False
        return out
    if isinstance(node, list):
        return [_draft07(v) for v in node]
    return node


def _definition_name(section: str) -> str:
    return StackwiseConfig.model_fields[section].annotation.__name__  # type: ignore[union-attr]


def _synonyms_by_definition() -> dict[str, dict[str, tuple[str, ...]]]:
    """{definition: {field: accepted other spellings}} from the schema's `synonyms(...)` validators."""
    from .fields import section_type

    out: dict[str, dict[str, tuple[str, ...]]] = {}
    seen: set[str] = set()

    def walk(model: Any) -> None:
        if model.__name__ in seen:
            return
        seen.add(model.__name__)
        for name, info in model.model_fields.items():
            for meta in info.metadata:
                extra = getattr(getattr(meta, "func", None), "synonyms", None)
                if extra:
                    out.setdefault(model.__name__, {})[name] = extra
            section = section_type(info.annotation)
            if section is not None:
                walk(section)
        if model.__name__ == "DataConfig":
            from .sections import DatasetSource

            walk(DatasetSource)

    walk(StackwiseConfig)
    return out


def _add_to_enum(prop: dict[str, Any], values: tuple[str, ...]) -> None:
    """Add a field's synonyms, and upper-case spellings (the loader ignores case), to its enum."""
    for node in [prop, *prop.get("anyOf", [])]:
        if "enum" in node:
            words = [*node["enum"], *values]
            extra = [*values, *(w.upper() for w in words if isinstance(w, str))]
            node["enum"] = [*node["enum"], *dict.fromkeys(v for v in extra if v not in node["enum"])]


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a stackwise config file, alias keys and value synonyms included."""
    schema = _draft07(StackwiseConfig.model_json_schema())
    defs = schema["definitions"]
    for definition, fields in _synonyms_by_definition().items():
        for name, values in fields.items():
            _add_to_enum(defs[definition]["properties"][name], values)
    for section in SECTIONS:  # an empty section (`training:` with everything commented out) is null
        prop = schema["properties"][section]
        ref = {"$ref": prop.pop("$ref")}
        prop["anyOf"] = [ref, {"type": "null"}]
    for section in SECTIONS:
        props = defs[_definition_name(section)]["properties"]
        for alias, spec in KEY_ALIASES[section].items():
            target = dotted(spec.target)
            entry: dict[str, Any] = {"description": f"Alias of `{target}`."}
            if spec.transform is None and spec.target[0] == section and len(spec.target) == 2:
                entry = {**props[spec.target[1]], **entry}
                entry.pop("default", None)
            props[alias] = entry
    for alias, target in SECTION_ALIASES.items():
        name = "WandbConfig" if target == ("logging", "wandb") else _definition_name(target[0])
        ref = {"$ref": f"#/definitions/{name}"}
        schema["properties"][alias] = {
            "description": f"Alias of `{dotted(target)}` (another guide's layout).",
            "anyOf": [ref, {"type": "null"}],
        }
    schema["properties"]["defaults"] = {
        "description": "Config groups to compose first, e.g. `- model: tiny`; `_self_` marks where this file goes.",
        "type": "array",
        "items": {"anyOf": [{"const": "_self_"}, {"type": "object", "maxProperties": 1}]},
    }
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


def group_schema(group: str) -> dict[str, Any]:
    """Schema of a flat config-group file (`model/tiny.yaml`): one section's keys at the top level.

    Flat files may also carry keys of another section (002's training files name their data files), which
    the loader routes by name; those are listed too.
    """
    from .aliases import GLOBAL_KEYS

    full = json_schema()
    root = json.loads(json.dumps(full["definitions"][_definition_name(group)]))
    for key, targets in sorted(GLOBAL_KEYS.items()):
        if key not in root["properties"] and len(targets) == 1:
            root["properties"][key] = {"description": f"Setting of `{dotted(next(iter(targets)))}`."}
    if group == "model":
        root["properties"]["model_size"] = {"description": "Guide 002: selects the model preset of this name."}
    return {"$schema": full["$schema"], **root, "definitions": full["definitions"]}


def data_mixes_schema() -> dict[str, Any]:
    """Schema of a `datasets.yaml` file of named data mixes (guide 001)."""
    from .sections import DataMixesFile

    return {"$schema": "http://json-schema.org/draft-07/schema#", **_draft07(DataMixesFile.model_json_schema())}


SCHEMA_KINDS = ("config", "data_mixes", "model", "training", "data", "distributed", "distillation")


def json_schema_text(kind: str = "config") -> str:
    """JSON text of the schema of a full config (`config`), a data-mix file, or a flat group file."""
    schema = {"config": json_schema, "data_mixes": data_mixes_schema}.get(kind, lambda: group_schema(kind))()
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


# -- Markdown reference ------------------------------------------------------------------------------------
def _type_name(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        return " | ".join(_type_name(p) for p in prop["anyOf"])
    if "$ref" in prop:
        return f"[{prop['$ref'].rsplit('/', 1)[-1]}](#{prop['$ref'].rsplit('/', 1)[-1].lower()})"
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("items", {})
        inner = _type_name(items) if isinstance(items, dict) else ", ".join(_type_name(i) for i in items)
        return f"list of {inner}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {_type_name(prop['additionalProperties'])}"
    return str(kind)


def _constraints(prop: dict[str, Any]) -> str:
    parts = []
    for key, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in prop:
            parts.append(f"{sym} {prop[key]}")
    for sub in prop.get("anyOf", []):
        parts.extend(c for c in [_constraints(sub)] if c)
    if "typical" in prop:
        low, high = prop["typical"]
        parts.append(f"typical {low}-{high} (guide {prop.get('guide', '?')})")
    if "pattern" in prop:
        parts.append(f"matches `{prop['pattern']}`")
    return "; ".join(parts)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _prefixes() -> dict[str, str]:
    """Definition name -> dotted path of the (first) field that uses it."""
    from .fields import section_type

    out: dict[str, str] = {}

    def walk(model: Any, prefix: str) -> None:
        out.setdefault(model.__name__, prefix)
        for name, info in model.model_fields.items():
            section = section_type(info.annotation)
            if section is not None:
                walk(section, f"{prefix}{name}.")
            elif name == "datasets":
                from .sections import DatasetSource

                out.setdefault(DatasetSource.__name__, f"{prefix}{name}[].")

    walk(StackwiseConfig, "")
    return out


def _read_by(path: str) -> str:
    import re

    from .support import consumer_of

    try:
        component, now = consumer_of(path.replace("[]", ""))
    except KeyError:
        return ""
    if now:
        return "now"
    issue = re.search(r"#\d+", component)
    return f"planned ({issue.group(0)})" if issue else "planned"


def markdown_reference() -> str:
    """`docs/config-reference.md`: every section and field, with type, default, range and aliases."""
    schema = json_schema()
    defs = schema["definitions"]
    prefixes = _prefixes()
    lines = [
        "# Configuration reference",
        "",
        "Generated from the schema by `stackwise schema --format markdown`; do not edit by hand.",
        "Every key below is validated by `stackwise validate`. Aliases are the names other guides use;",
        "giving a setting under two names with different values is an error.",
        "",
        "The `read by` column says whether the engine reads a setting today; `stackwise train` refuses a config",
        "that sets a setting marked `planned` rather than silently ignoring it (see `stackwise/config/support.py`).",
        "",
        "Top-level sections: " + ", ".join(f"[`{s}`](#{_definition_name(s).lower()})" for s in SECTIONS) + ".",
        "Other layouts' section names: "
        + ", ".join(f"`{a}` -> `{dotted(t)}`" for a, t in SECTION_ALIASES.items())
        + ".",
        "",
    ]
    ordered = [_definition_name(s) for s in SECTIONS] + sorted(set(defs) - {_definition_name(s) for s in SECTIONS})
    for name in ordered:
        definition = defs[name]
        lines += [f"## {name}", "", definition.get("description", "").strip(), ""]
        lines += ["| key | type | default | allowed | read by | description |", "|---|---|---|---|---|---|"]
        for key, prop in definition.get("properties", {}).items():
            desc = prop.get("description", "")
            if desc.startswith("Alias of"):
                continue
            required = key in definition.get("required", [])
            default = json.dumps(prop["default"]) if "default" in prop else ("required" if required else "see section")
            lines.append(
                f"| `{key}` | {_cell(_type_name(prop))} | `{_cell(default)}` | {_cell(_constraints(prop))} "
                f"| {_read_by(prefixes.get(name, '') + key) if name in prefixes else ''} | {_cell(desc)} |"
            )
        aliases = [
            (k, p["description"])
            for k, p in definition.get("properties", {}).items()
            if p.get("description", "").startswith("Alias of")
        ]
        if aliases:
            lines += [
                "",
                "Aliases: " + "; ".join(f"`{k}` ({d[len('Alias of ') :].rstrip('.')})" for k, d in aliases) + ".",
            ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
