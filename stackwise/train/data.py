"""Reading training documents (strings) from the configured sources: files, directories, globs, Hugging Face datasets.

A *source* is one configured dataset (`data.dataset_path`, an entry of `data.datasets` or of a named data mix,
`data.validation_path`, or the built-in corpus). `training_sources` and `validation_source` resolve each one
into a `Source` (its kind and files) up front, so that a missing path fails before any tokenising;
`documents(source)` then reads it lazily, one string per document, always in the same order. `.npy` token arrays
hold tokens, not text: `token_files` opens them memory-mapped and loaders.py's `TokenFileRows` cuts them into sequences.

Every problem a user can cause is a `DataError` that names the config key, the file, and what is expected.
"""

from __future__ import annotations

import glob
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from stackwise.config.schema import StackwiseConfig

TEXT_SUFFIXES = (".txt", ".md", ".py", ".text")
RECORD_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
# Files that mark a directory written by `datasets.Dataset.save_to_disk` (or DatasetDict's).
DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
STDLIB_EXCLUDED = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
# `owner/name` or `name`: what a Hugging Face dataset id looks like (a typo'd local path usually does not).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_RECORD_BATCH = 512
T = TypeVar("T")


class DataError(ValueError):
    """A training-data problem the user can fix in the config or the data files."""


@dataclass(frozen=True)
class Source:
    """One resolved dataset: how to read it, and which config keys to name when it is wrong."""

    key: str  # the config key that gave the path, e.g. `data.datasets[1].path`
    field_key: str  # the config key of its text_field / text_template
    label: str  # how logs name it
    kind: str  # builtin, text, json, csv, parquet, npy, disk (save_to_disk) or hub (a Hugging Face name)
    path: str  # the resolved path, or the hub id
    files: tuple[Path, ...] = ()
    subset: str | None = None
    split: str = "train"
    streaming: bool = False
    weight: float = 1.0
    text_field: str | None = None
    text_template: str | None = None
    cache_dir: str | None = None

    def where(self) -> str:
        """The file (or files, or dataset) this source reads, for messages."""
        if len(self.files) == 1:
            return str(self.files[0])
        if len(self.files) > 1:
            return f"{self.path} ({len(self.files)} files, from {self.files[0]})"
        return self.path


def builtin_corpus_files() -> list[Path]:
    """The `.py` files of this interpreter's standard library, without tests or installed packages, in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = [p for p in root.rglob("*.py") if p.is_file() and not STDLIB_EXCLUDED & set(p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def builtin_label() -> str:
    """How the run summary names the built-in corpus."""
    return f"built-in corpus: Python {sys.version_info.major}.{sys.version_info.minor} standard library"


# -- resolving the configured sources -----------------------------------------------------------------------
def training_sources(cfg: StackwiseConfig) -> list[Source]:
    """The training sources of `cfg.data`: dataset_path, each of datasets / the data mix, or the built-in corpus."""
    d = cfg.data
    if d.datasets is not None or d.data_mix is not None:
        prefix, entries = ("data.datasets", d.datasets) if d.datasets is not None else _mix_entries(cfg)
        return [_entry_source(cfg, entry, f"{prefix}[{i}]") for i, entry in enumerate(entries)]
    if d.dataset_path is None:
        files = builtin_corpus_files()
        if not files:
            raise DataError(
                f"data.dataset_path is null, so the built-in corpus is used, but no .py files were found under "
                f"{sysconfig.get_paths()['stdlib']}; set data.dataset_path to your own data"
            )
        return [
            Source(
                "data.dataset_path",
                "data.text_field",
                builtin_label(),
                "builtin",
                "stdlib",
                tuple(files),
                streaming=d.streaming,
            )
        ]
    return [
        resolve(
            d.dataset_path,
            "data.dataset_path",
            "data",
            cfg,
            fmt=d.format,
            subset=d.config,
            split=d.split,
            streaming=d.streaming,
            text_field=d.text_field,
            text_template=d.text_template,
        )
    ]


def validation_source(cfg: StackwiseConfig) -> Source | None:
    """`data.validation_path` resolved, or None. A hub name is read from its `validation` split."""
    d = cfg.data
    if d.validation_path is None:
        return None
    return resolve(
        d.validation_path,
        "data.validation_path",
        "data",
        cfg,
        fmt=d.format,
        subset=d.config,
        split="validation",
        streaming=d.streaming,
        text_field=d.text_field,
        text_template=d.text_template,
    )


def _mix_entries(cfg: StackwiseConfig) -> tuple[str, tuple[Any, ...]]:
    from pydantic import ValidationError

    from stackwise.config.sections import DataMixesFile
    from stackwise.config.yamlio import load_yaml_file

    d = cfg.data
    file = Path(d.data_mixes_file or "")
    if d.data_mixes_file is None or not file.is_file():
        raise DataError(
            f"data.data_mixes_file: {d.data_mixes_file} is not a file (it is resolved against the working "
            f"directory); data.data_mix `{d.data_mix}` is looked up in it"
        )
    doc = load_yaml_file(file)
    try:
        if doc.issues:
            raise DataError(doc.issues[0].message)
        mixes = DataMixesFile.model_validate(doc.data).data_mixes
    except (ValidationError, DataError) as err:
        raise DataError(
            f"data.data_mixes_file: {file} is not a valid data-mix file ({err}); run `stackwise validate {file}`"
        ) from err
    if d.data_mix not in mixes:
        raise DataError(f"data.data_mix: no mix `{d.data_mix}` in {file} (mixes: {', '.join(mixes) or 'none'})")
    return f"{file}: data_mixes.{d.data_mix}.datasets", mixes[d.data_mix].datasets


def _entry_source(cfg: StackwiseConfig, entry: Any, prefix: str) -> Source:
    d = cfg.data
    own_text = entry.text_field is not None or entry.text_template is not None
    return resolve(
        entry.path,
        f"{prefix}.path",
        prefix if own_text else "data",
        cfg,
        fmt=entry.format if entry.format != "auto" else d.format,
        subset=entry.subset or d.config,
        split=entry.split,
        streaming=entry.streaming or d.streaming,
        text_field=entry.text_field if own_text else d.text_field,
        text_template=entry.text_template if own_text else d.text_template,
        weight=entry.weight,
        label=entry.name,
    )


def resolve(
    path: str,
    key: str,
    field_prefix: str,
    cfg: StackwiseConfig,
    *,
    fmt: str = "auto",
    subset: str | None = None,
    split: str = "train",
    streaming: bool = False,
    text_field: str | None = None,
    text_template: str | None = None,
    weight: float = 1.0,
    label: str | None = None,
) -> Source:
    """Resolve one configured path: a file, a directory, a glob, a save_to_disk directory, or a hub name."""
    data_dir = cfg.data.data_dir
    local = Path(path).expanduser()
    if not local.is_absolute() and data_dir is not None:
        local = Path(data_dir).expanduser() / local
    field_key = f"{field_prefix}.{'text_template' if text_template is not None else 'text_field'}"
    common = dict(
        subset=subset,
        split=split,
        streaming=streaming,
        weight=weight,
        text_field=text_field,
        text_template=text_template,
        cache_dir=cfg.data.cache_dir,
    )
    if any(c in path for c in "*?["):
        files = _expand(sorted(glob.glob(str(local), recursive=True)), fmt)
        if not files:
            raise DataError(f"{key}: the pattern {local} matches no data files")
    elif local.is_file():
        files = [local]
    elif local.is_dir():
        if any((local / marker).is_file() for marker in DISK_MARKERS):
            return Source(key, field_key, label or str(local), "disk", str(local), **common)
        files = _expand([str(local)], fmt)
        if not files:
            raise DataError(
                f"{key}: the directory {local} holds no data files (known extensions: "
                f"{', '.join((*TEXT_SUFFIXES, *RECORD_SUFFIXES, '.npy'))}; set the format to read others)"
            )
    elif _HUB_ID.match(path) and Path(path).suffix.lower() not in (*TEXT_SUFFIXES, *RECORD_SUFFIXES, ".npy"):
        return Source(key, field_key, label or path, "hub", path, **common)
    else:
        where = f" (resolved against data.data_dir {data_dir})" if data_dir and not Path(path).is_absolute() else ""
        raise DataError(
            f"{key}: {local} does not exist{where}; give an existing file, directory or glob, "
            "or a Hugging Face dataset name (`owner/name`)"
        )
    kinds = {_kind_of(f, fmt, key) for f in files}
    if len(kinds) > 1:
        raise DataError(
            f"{key}: {path} mixes data formats ({', '.join(sorted(kinds))}); one source reads one format: "
            "set the format, or list each format as its own entry of data.datasets"
        )
    files_ = tuple(files)
    return Source(key, field_key, label or path, kinds.pop(), str(local), files_, **common)


def _expand(matches: Iterable[str], fmt: str) -> list[Path]:
    """Files of `matches`, directories expanded recursively to the files whose format is known (or all, with a format)."""
    files: list[Path] = []
    for match in matches:
        p = Path(match)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and not _hidden(f.relative_to(p)))
            files.extend(f for f in inside if fmt != "auto" or _known(f))
    return files


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _extension(file: Path) -> str:
    suffixes = [s.lower() for s in file.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSED_SUFFIXES:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _known(file: Path) -> bool:
    return _extension(file) in (*TEXT_SUFFIXES, *RECORD_SUFFIXES, ".npy")


def _kind_of(file: Path, fmt: str, key: str) -> str:
    ext = _extension(file)
    kind = fmt if fmt != "auto" else RECORD_SUFFIXES.get(ext, "npy" if ext == ".npy" else "text")
    if kind in ("text", "npy") and file.suffix.lower() in COMPRESSED_SUFFIXES:
        raise DataError(f"{key}: {file} is compressed; only json, jsonl and csv files may be (decompress it)")
    return kind


# -- the validation split -----------------------------------------------------------------------------------------
def holdout_period(fraction: float) -> int | None:
    """k: every k-th document is held out for validation (None when fraction is 0)."""
    return max(2, round(1 / fraction)) if fraction > 0 else None


def label_documents(items: Iterable[T], k: int | None) -> Iterator[tuple[bool, T]]:
    """(held_out, item) for each item: item i is held out iff `i % k == k - 1`, or, when that holds out none of
    n >= 2 items (n < k), iff it is the last. One item of look-ahead decides that, so streams can be split too."""
    i, previous = -1, None
    for i, item in enumerate(items):
        if i > 0:
            yield k is not None and (i - 1) % k == k - 1, previous
        previous = item
    if i >= 0:
        yield k is not None and (i % k == k - 1 or 2 <= i + 1 < k), previous


def training_documents(cfg: StackwiseConfig) -> Iterator[str]:
    """The training documents of `cfg.data`, source after source, without the held-out ones (to train a tokenizer)."""
    if cfg.data.use_dummy_data:
        raise DataError("data.use_dummy_data: dummy data is random token ids, with no text to read")
    holdout = None if cfg.data.validation_path is not None else holdout_period(cfg.data.validation_fraction)
    for source in training_sources(cfg):
        docs = label_documents(islice(documents(source), cfg.data.num_samples), holdout)
        yield from (doc for held, doc in docs if not held)


# -- reading documents -----------------------------------------------------------------------------------------
def documents(source: Source) -> Iterator[str]:
    """The documents of a text source, lazily and in a fixed order; empty documents and null texts are skipped."""
    if source.kind in ("builtin", "text"):
        for file in source.files:
            text = file.read_text(encoding="utf-8", errors="replace")
            if text:
                yield text
        return
    if source.kind == "npy":
        raise DataError(f"{source.key}: {source.where()} holds token ids, not text")
    yield from _record_texts(_open_records(source), source)


def _open_records(source: Source) -> Any:
    import datasets

    try:
        if source.kind == "disk":
            loaded = datasets.load_from_disk(source.path)
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise DataError(
                        f"{source.key}: {source.path} has no split `{source.split}` (splits: {', '.join(loaded)})"
                    )
                loaded = loaded[source.split]
            return loaded
        if source.kind == "hub":
            return datasets.load_dataset(
                source.path,
                source.subset,
                split=source.split,
                streaming=source.streaming,
                cache_dir=source.cache_dir,
            )
        with _no_load_count():
            return datasets.load_dataset(
                source.kind,
                data_files=[str(f) for f in source.files],
                split="train",
                streaming=source.streaming,
                cache_dir=source.cache_dir,
            )
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, its own errors)
        raise _load_error(source, err) from err


@contextmanager
def _no_load_count() -> Iterator[None]:
    # datasets sends a HEAD request to count each load, even of the `json` builder over local files: offline,
    # that costs seconds of DNS and timeouts in every DataLoader worker. Local files need no network at all.
    from datasets import config

    counting = config.HF_UPDATE_DOWNLOAD_COUNTS
    config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        config.HF_UPDATE_DOWNLOAD_COUNTS = counting


def _load_error(source: Source, err: Exception) -> DataError:
    if source.kind == "hub":
        return DataError(
            f"{source.key}: `{source.path}` is not a local file, directory or glob, and as a Hugging Face dataset "
            f"(subset {source.subset}, split {source.split}) it could not be loaded without a download: {err}. "
            "Give a local path, or download the dataset into the cache (data.cache_dir) first"
        )
    return DataError(f"{source.key}: {source.where()} could not be read as {source.kind}: {err}")


def _record_texts(records: Any, source: Source) -> Iterator[str]:
    """Text of each record: its text_field (default `text`), or text_template formatted with its fields."""
    field_name = source.text_field or "text"
    batches = records.iter(batch_size=_RECORD_BATCH)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as err:  # a malformed file fails here when it is streamed
            raise _load_error(source, err) from err
        if source.text_template is not None:
            rows = zip(*batch.values(), strict=True)
            texts = [_format(source, dict(zip(batch, row, strict=True))) for row in rows]
        elif field_name in batch:
            texts = batch[field_name]
        else:
            raise DataError(
                f"{source.field_key}: records of {source.where()} have no field `{field_name}` "
                f"(fields: {', '.join(batch) or 'none'}); set text_field to one of them, or use text_template"
            )
        for text in texts:
            if text is None or text == "":
                continue
            if not isinstance(text, str):
                raise DataError(
                    f"{source.field_key}: field `{field_name}` of {source.where()} holds {type(text).__name__}, "
                    "not text; choose a text field, or build the text with text_template"
                )
            yield text


def _format(source: Source, record: dict[str, Any]) -> str:
    template = source.text_template or ""
    try:
        return template.format(**record)
    except KeyError as err:
        raise DataError(
            f"{source.field_key}: the template {template!r} uses field `{err.args[0]}`, which records of "
            f"{source.where()} do not have (fields: {', '.join(record) or 'none'})"
        ) from err
    except (IndexError, ValueError) as err:
        raise DataError(
            f"{source.field_key}: the template {template!r} is not a valid format string over record fields "
            f"(`{{name}}`; write `{{{{` for a literal brace): {err}"
        ) from err


# -- token arrays ------------------------------------------------------------------------------------------------
def token_files(source: Source) -> list[np.ndarray]:
    """Each `.npy` file of a token source, memory-mapped and flattened in row order (a view, nothing is read)."""
    arrays = []
    for file in source.files:
        try:
            array = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"{source.key}: {file} is not a NumPy .npy array of token ids: {err}") from err
        if array.ndim not in (1, 2) or not np.issubdtype(array.dtype, np.integer):
            raise DataError(
                f"{source.key}: {file} holds a {array.ndim}-D {array.dtype} array; token ids must be a 1-D or "
                "(sequences, length) integer array"
            )
        arrays.append(array.reshape(-1))
    return arrays


def check_token_ids(part: np.ndarray, vocab_size: int, where: str, key: str) -> None:
    """Every id of `part` (a chunk of a token source) lies in [0, vocab_size)."""
    if not len(part):
        return
    low, high = int(part.min()), int(part.max())
    if low < 0 or high >= vocab_size:
        raise DataError(
            f"{key}: {where} holds token id {high if high >= vocab_size else low}, outside the vocabulary "
            f"[0, {vocab_size}) (model.vocab_size, or the tokenizer's size when that is null); the ids must come "
            "from the tokenizer of data.tokenizer_path"
        )
