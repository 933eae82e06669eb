"""The guides' other names for stackwise settings, and `canonicalize`, which maps a document onto canonical names.

Canonical names are Stack-Wise's (guide 000). Other layouts are aliases:
- 001: `model_config` / `train_config` / `dataset_config` / `eval_config` / `wandb_config`, `hidden_size`, ...
- 002: flat model and training files (config groups) with `use_rmsnorm`, `grad_clip`, `num_epochs`, ...
- 003: `train` with `lr`, `total_steps`, `micro_batch_size`, `grad_accum_steps`; `data.seq_len`, `data.dataset`
- 004: config groups (`model/`, `training/`, `distributed/`, `distillation/`) with Hugging Face names.

Giving one setting twice under two names is an error when the values differ. `canonicalize` also returns,
for every canonical path, where in the document it was written, so errors point at the user's own key.
Half of this file is the alias tables, which are data; the mapping code is the other half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .errors import Issue, Location, did_you_mean, dotted
from .schema import SECTIONS, StackwiseConfig
from .yamlio import Doc

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class Weak:
    """A value implied rather than stated (e.g. `fp16: false` implies fp32); any stated value wins over it."""

    value: Any


@dataclass(frozen=True)
class Alias:
    """Another name for a canonical setting: its canonical path from the root, and an optional value transform."""

    target: Path_
    transform: Callable[[Any], Any] | None = None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _norm_from_rmsnorm(value: Any) -> str:
    return "rmsnorm" if _bool(value) else "layernorm"


def _kernel_from_flash(value: Any) -> str:
    return "auto" if _bool(value) else "torch"


def _flag_precision(name: str) -> Callable[[Any], Any]:
    def transform(value: Any) -> Any:
        return name if _bool(value) else Weak("fp32")

    return transform


def _amp(value: Any) -> Any:
    return Weak("auto") if _bool(value) else "fp32"


def _mixed_precision_group(value: Any) -> Any:
    """004's `distributed.mixed_precision: {enabled, dtype}` -> training.precision."""
    if isinstance(value, bool):
        return _amp(value)
    if not isinstance(value, dict):
        raise ValueError("must be a mapping {enabled, dtype}")
    unknown = set(value) - {"enabled", "dtype"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: enabled, dtype")
    if not _bool(value.get("enabled", True)):
        return "fp32"
    return value.get("dtype", "bf16")


def _checkpointing_group(value: Any) -> Any:
    """004's `activation_checkpointing: {enabled, checkpoint_impl}` -> training.gradient_checkpointing."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, dict):
        raise ValueError("must be a mapping {enabled, checkpoint_impl}")
    unknown = set(value) - {"enabled", "checkpoint_impl"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: enabled, checkpoint_impl")
    impl = str(value.get("checkpoint_impl", "NO_REENTRANT")).upper()
    if impl != "NO_REENTRANT":
        raise ValueError(f"checkpoint_impl {impl} is not supported; stackwise uses NO_REENTRANT checkpointing")
    return _bool(value.get("enabled", True))


SECTION_ALIASES: dict[str, Path_] = {
    "model_config": ("model",),
    "train_config": ("training",),
    "train": ("training",),
    "dataset_config": ("data",),
    "eval_config": ("evaluation",),
    "wandb_config": ("logging", "wandb"),
}

KEY_ALIASES: dict[str, dict[str, Alias]] = {
    "model": {
        "hidden_size": Alias(("model", "d_model")),
        "num_hidden_layers": Alias(("model", "n_layers")),
        "num_attention_heads": Alias(("model", "n_heads")),
        "num_kv_heads": Alias(("model", "n_kv_heads")),
        "num_key_value_heads": Alias(("model", "n_kv_heads")),
        "intermediate_size": Alias(("model", "d_ff")),
        "max_position_embeddings": Alias(("model", "max_seq_len")),
        "layer_norm_eps": Alias(("model", "norm_eps")),
        "rms_norm_eps": Alias(("model", "norm_eps")),
        "tie_word_embeddings": Alias(("model", "tie_embeddings")),
        "hidden_act": Alias(("model", "ffn_activation")),
        "use_rmsnorm": Alias(("model", "norm_type"), _norm_from_rmsnorm),
        "use_flash_attention": Alias(("model", "attention_kernel"), _kernel_from_flash),
        "mla_config": Alias(("model", "mla")),
        "mla_rq": Alias(("model", "mla", "q_lora_rank")),
        "mla_rkv": Alias(("model", "mla", "kv_lora_rank")),
        "peer_config": Alias(("model", "peer")),
        "mask_fraction_min": Alias(("training", "min_mask_fraction")),
        "mask_fraction_max": Alias(("training", "max_mask_fraction")),
        "special_mask_id": Alias(("training", "mask_token_id")),
        "teacher": Alias(("distillation", "teacher")),
    },
    "training": {
        "lr": Alias(("training", "learning_rate")),
        "total_steps": Alias(("training", "max_steps")),
        "micro_batch_size": Alias(("training", "batch_size")),
        "per_device_train_batch_size": Alias(("training", "batch_size")),
        "per_device_eval_batch_size": Alias(("evaluation", "batch_size")),
        "grad_accum_steps": Alias(("training", "gradient_accumulation_steps")),
        "grad_accumulation_steps": Alias(("training", "gradient_accumulation_steps")),
        "num_epochs": Alias(("training", "num_train_epochs")),
        "grad_clip": Alias(("training", "max_grad_norm")),
        "gradient_clipping": Alias(("training", "max_grad_norm")),
        "logging_steps": Alias(("training", "log_interval")),
        "save_steps": Alias(("training", "save_interval")),
        "ckpt_interval": Alias(("training", "save_interval")),
        "save_every_n_steps": Alias(("training", "save_interval")),
        "eval_steps": Alias(("training", "validation_interval")),
        "eval_interval": Alias(("training", "validation_interval")),
        "eval_every_n_steps": Alias(("training", "validation_interval")),
        "output_dir": Alias(("training", "checkpoint_dir")),
        "save_dir": Alias(("training", "checkpoint_dir")),
        "log_path": Alias(("training", "log_dir")),
        "checkpoint_path": Alias(("training", "resume_from_checkpoint")),
        "checkpoint": Alias(("training", "init_from")),
        "checkpoint_name": Alias(("training", "run_id")),
        "use_compile": Alias(("training", "compile")),
        "use_amp": Alias(("training", "precision"), _amp),
        "mixed_precision": Alias(("training", "precision"), _amp),
        "fp16": Alias(("training", "precision"), _flag_precision("fp16")),
        "bf16": Alias(("training", "precision"), _flag_precision("bf16")),
        "lr_scheduler": Alias(("training", "lr_scheduler_type")),
        "training_objective": Alias(("training", "objective")),
        "max_seq_length": Alias(("training", "seq_len")),
        "tokenizer_path": Alias(("data", "tokenizer_path")),
        "use_wandb": Alias(("logging", "wandb", "enabled")),
    },
    "data": {
        "dataset": Alias(("data", "dataset_path")),
        "data_file": Alias(("data", "dataset_path")),
        "val_file": Alias(("data", "validation_path")),
        "subset": Alias(("data", "config")),
        "tokenizer_name": Alias(("data", "tokenizer_path")),
        "max_length": Alias(("training", "seq_len")),
        "seq_len": Alias(("training", "seq_len")),
        "max_seq_length": Alias(("training", "seq_len")),
    },
    "evaluation": {
        "eval_batch_size": Alias(("evaluation", "batch_size")),
    },
    "logging": {},
    "distributed": {
        "mixed_precision": Alias(("training", "precision"), _mixed_precision_group),
        "activation_checkpointing": Alias(("training", "gradient_checkpointing"), _checkpointing_group),
    },
    "distillation": {},
}

GROUPS = ("model", "training", "data", "distributed", "distillation")


def section_fields(section: str) -> tuple[str, ...]:
    """Canonical field names of a top-level section."""
    return tuple(StackwiseConfig.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]


def _build_global() -> dict[str, set[Path_]]:
    table: dict[str, set[Path_]] = {}
    for section in SECTIONS:
        for name in section_fields(section):
            table.setdefault(name, set()).add((section, name))
        for name, alias in KEY_ALIASES[section].items():
            table.setdefault(name, set()).add(alias.target)
    return table


GLOBAL_KEYS = _build_global()


def owner_hint(key: str, here: str) -> str:
    """` It belongs under `training.`` when `key` is a setting of another section."""
    owners = sorted({dotted(t[:-1]) for t in GLOBAL_KEYS.get(key, ()) if t[0] != here})
    if len(owners) == 1:
        return f"; this key belongs under `{owners[0]}.`"
    if owners:
        return "; this key belongs under one of " + ", ".join(f"`{o}.`" for o in owners)
    return ""


def infer_group(keys: list[str], hint: str | None) -> str | None:
    """The section a flat file configures: the folder name when it is a group, else the best key match."""
    if hint in GROUPS:
        return hint
    scores = {s: sum(k in section_fields(s) or k in KEY_ALIASES[s] for k in keys) for s in SECTIONS}
    best = max(scores.values(), default=0)
    winners = [s for s, n in scores.items() if n == best]
    return winners[0] if best and len(winners) == 1 else None


@dataclass
class _Entry:
    target: Path_
    value: Any
    source: Path_
    weak: bool = False


class _Builder:
    """Collects (canonical path, value, source path) entries and builds the canonical tree, detecting conflicts."""

    def __init__(self, doc: Doc):
        self.doc = doc
        self.entries: list[_Entry] = []
        self.issues: list[Issue] = []
        self.sections: dict[Path_, Path_] = {}  # canonical section -> where the document opened it

    def _add(self, target: Path_, value: Any, source: Path_) -> None:
        if isinstance(value, Weak):
            self.entries.append(_Entry(target, value.value, source, weak=True))
        else:
            self.entries.append(_Entry(target, value, source))

    def error(self, source: Path_, path: str, message: str) -> None:
        self.issues.append(Issue(path, message).at(self.doc.loc(source)))

    def route(self, section: str, key: Any, value: Any, source: Path_, *, flat: bool = False) -> None:
        """Place `section.key` (as written at `source`) onto its canonical path."""
        key = str(key)
        if key in section_fields(section):
            self.add((section, key), value, source)
            return
        alias = KEY_ALIASES[section].get(key)
        if alias is None and flat and len(GLOBAL_KEYS.get(key, ())) == 1:
            # Flat group files (guide 002) mix sections: `data_file` in a training file is data's.
            target = next(iter(GLOBAL_KEYS[key]))
            alias = KEY_ALIASES[target[0]].get(key) or Alias(target)
        if alias is None:
            self.unknown(section, key, source)
            return
        if alias.transform is not None:
            try:
                value = alias.transform(value)
            except ValueError as exc:
                self.error(source, dotted(alias.target), str(exc))
                return
        self.add(alias.target, value, source)

    def add(self, target: Path_, value: Any, source: Path_) -> None:
        if target == ("model", "mla") and isinstance(value, dict) and "rope_theta" in value:
            # 001 documents `mla_config.rope_theta`; stackwise has one RoPE base, model.rope_theta.
            value = dict(value)
            self._add(("model", "rope_theta"), value.pop("rope_theta"), (*source, "rope_theta"))
        self._add(target, value, source)

    def unknown(self, section: str, key: str, source: Path_) -> None:
        candidates = [*section_fields(section), *KEY_ALIASES[section]]
        guess = did_you_mean(key, candidates)
        hint = owner_hint(key, section)
        if not hint and guess:
            hint = f"; did you mean `{guess}`?"
        self.error(source, f"{section}.{key}", f"unknown key `{key}` in `{section}`{hint}")

    def build(self) -> tuple[dict[str, Any], dict[Path_, Path_]]:
        tree: dict[str, Any] = {}
        owners: dict[Path_, _Entry] = {}
        ordered = [e for e in self.entries if not e.weak] + [e for e in self.entries if e.weak]
        for entry in ordered:
            self._assign(tree, entry.target, entry.value, entry, owners)
        origins = {path: (entry.source + path[len(entry.target) :]) for path, entry in owners.items()}
        for section, source in self.sections.items():
            origins.setdefault(section, source)
        return tree, origins

    def _assign(self, tree: dict, path: Path_, value: Any, entry: _Entry, owners: dict[Path_, _Entry]) -> None:
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = path[-1]
        if isinstance(value, dict) and (last not in node or isinstance(node[last], dict)):
            # Recurse so that every leaf has an owner: `mla_rq` and `mla: {q_lora_rank}` then conflict.
            node.setdefault(last, {})
            owners.setdefault(path, entry)
            for key, sub in value.items():
                sub_entry = _Entry((*path, key), sub, (*entry.source, key), entry.weak)
                self._assign(tree, (*path, key), sub, sub_entry, owners)
            return
        previous = owners.get(path)
        if previous is not None and last in node:
            if entry.weak and not previous.weak:
                return
            if node[last] != value:
                first = self.doc.loc(previous.source)
                where = f" (line {first.line})" if first.line else ""
                self.error(
                    entry.source,
                    dotted(path),
                    f"`{dotted(previous.source)}`{where} and `{dotted(entry.source)}` both set `{dotted(path)}`, "
                    f"to {node[last]!r} and {value!r}; give it once",
                )
            return
        node[last] = value
        owners[path] = entry


def canonicalize(doc: Doc, group: str | None = None) -> tuple[dict[str, Any], dict[Path_, Location], list[Issue]]:
    """Map a document onto canonical names. `group` names the section of a flat group file.

    Returns the canonical tree, the location of every canonical path in the document, and the issues found.
    """
    builder = _Builder(doc)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        builder.error((), "", f"the top level must be a mapping of sections, got {type(data).__name__}")
        return {}, {}, builder.issues
    if group is not None:
        builder.sections[(group,)] = ()
        for key, value in data.items():
            if key != "model_size":  # composed by the loader
                builder.route(group, key, value, (key,), flat=True)
    else:
        _nested(builder, data)
    tree, origins = builder.build()
    return tree, locate_all(tree, origins, doc), builder.issues


def _nested(builder: _Builder, data: dict[Any, Any]) -> None:
    for key, value in data.items():
        key = str(key)
        if key in ("defaults", "model_size"):
            continue  # composed by the loader
        target = (key,) if key in SECTIONS else SECTION_ALIASES.get(key)
        if target is None:
            guess = did_you_mean(key, [*SECTIONS, *SECTION_ALIASES])
            hint = owner_hint(key, "") or (f"; did you mean `{guess}`?" if guess else "")
            allowed = ", ".join(SECTIONS)
            builder.error((key,), key, f"unknown top-level key `{key}`{hint} (sections: {allowed})")
            continue
        if target == ("logging", "wandb"):
            _wandb_section(builder, key, value)
            continue
        builder.sections.setdefault((target[0],), (key,))
        if value is None:
            continue
        if not isinstance(value, dict):
            builder.error((key,), target[0], f"section `{key}` must be a mapping, got {value!r}")
            continue
        for sub_key, sub_value in value.items():
            builder.route(target[0], sub_key, sub_value, (key, sub_key))
        if key == "model_config" and "mla_config" in value and "attention_type" not in value:
            builder.add(("model", "attention_type"), "mla", (key, "mla_config"))  # 001: MLA is always used


def _wandb_section(builder: _Builder, key: str, value: Any) -> None:
    """001's `wandb_config`: a mapping enables W&B logging; null disables it."""
    if value is None:
        builder.add(("logging", "wandb", "enabled"), False, (key,))
        return
    if not isinstance(value, dict):
        builder.error((key,), "logging.wandb", f"`{key}` must be a mapping or null, got {value!r}")
        return
    for sub_key, sub_value in value.items():
        builder.add(("logging", "wandb", str(sub_key)), sub_value, (key, sub_key))
    builder.add(("logging", "wandb", "enabled"), Weak(True), (key,))


def locate_all(tree: Any, origins: dict[Path_, Path_], doc: Doc) -> dict[Path_, Location]:
    """The document location of every path in the canonical tree (deeper paths follow their nearest origin)."""
    out: dict[Path_, Location] = {}

    def walk(node: Any, path: Path_) -> None:
        for end in range(len(path), 0, -1):
            if path[:end] in origins:
                source = origins[path[:end]] + path[end:]
                # A mapping reached only through its children (an alias such as `mla_rq`) takes their
                # locations, not the enclosing section's.
                if source in doc.marks or not isinstance(node, dict) or end == len(path):
                    out[path] = doc.loc(source)
                break
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, key))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, (*path, i))

    walk(tree, ())
    return out


def model_at(path: Path_) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at canonical `path` (for did-you-mean on nested keys)."""
    import typing

    from .fields import section_type

    cls: Any = StackwiseConfig
    for part in path:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(part) if cls is not None else None
        if info is None:
            return None
        cls = section_type(info.annotation)
        if cls is None:  # a list or dict of sections (`datasets`, `qlora_configs`): the item's class
            for arg in typing.get_args(info.annotation):
                inner = [a for a in typing.get_args(arg) if isinstance(a, type) and issubclass(a, BaseModel)]
                cls = inner[0] if inner else cls
    return cls
