"""Data sources: every kind of path the data section accepts, read from files the tests write, and the errors a
user sees for bad data. Helpers shared by the other `test_data_*` modules live here.

The byte tokenizer maps each UTF-8 byte to its value and EOS to 256, so expected token streams are written by hand.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from stackwise.config.schema import StackwiseConfig
from stackwise.train.data import (
    STDLIB_EXCLUDED,
    DataError,
    builtin_corpus_files,
    documents,
    token_files,
    training_sources,
)
from stackwise.train.packing import DataPipeline, build_data
from stackwise.train.tokenizer import load_tokenizer

EOS = 256
TOKENIZER = load_tokenizer("bytes")


def make_cfg(tmp_path: Path, data: dict[str, Any], **training: Any) -> StackwiseConfig:
    """A tiny config over `data` (byte tokenizer, a private datasets cache, no validation unless asked)."""
    data = {"tokenizer_path": "bytes", "cache_dir": str(tmp_path / "hf-cache"), "validation_fraction": 0, **data}
    training = {"seq_len": 31, "batch_size": 4, "max_steps": 10, **training}
    model = {"d_model": 64, "n_layers": 2, "n_heads": 2, "vocab_size": 258}
    return StackwiseConfig.from_dict({"model": model, "data": data, "training": training})


def build(tmp_path: Path, data: dict[str, Any], seq_len: int = 32, eval_sequences: int = 8, **training: Any):
    return build_data(make_cfg(tmp_path, data, **training), TOKENIZER, seq_len, eval_sequences=eval_sequences)


def take(pipeline: DataPipeline, n: int, start: int = 0) -> torch.Tensor:
    """The first n samples of `pipeline.batches(start)`, as one (n, L) tensor."""
    rows: list[torch.Tensor] = []
    for batch in pipeline.batches(start):
        rows.extend(batch)
        if len(rows) >= n:
            return torch.stack(rows[:n])
    raise AssertionError("batches() ended")


def stream(texts: Sequence[str]) -> list[int]:
    """The token stream of `texts` as packing builds it: each document's bytes, then EOS."""
    return [t for text in texts for t in [*text.encode(), EOS]]


def epoch_rows(pipeline: DataPipeline) -> list[list[int]]:
    """One epoch of a map-style pipeline's samples, sorted (the set of sequences it trains on)."""
    assert pipeline.samples_per_epoch is not None
    return sorted(take(pipeline, pipeline.samples_per_epoch).tolist())


def expected_rows(texts: Sequence[str], seq_len: int) -> list[list[int]]:
    tokens = stream(texts)
    return sorted(tokens[k * seq_len : (k + 1) * seq_len] for k in range(len(tokens) // seq_len))


def tagged_docs(n: int, width: int = 31) -> list[str]:
    """n documents of `width` bytes that each carry a unique tag `<id:NNN>` (with EOS: one 32-token sequence)."""
    return [(f"<id:{i:03d}> " + "lorem ipsum dolor sit amet " * 4)[:width] for i in range(n)]


def tags_in(rows: torch.Tensor) -> list[int]:
    """The tags in `rows`, in order (whole tags only)."""
    text = bytes(t if t < 256 else ord("|") for t in rows.flatten().tolist()).decode(errors="replace")
    return [int(part[:3]) for part in text.split("<id:")[1:] if part[:3].isdigit()]


def write_texts(folder: Path, texts: Sequence[str], suffix: str = ".txt") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"doc{i:03d}{suffix}" for i in range(len(texts))]
    for path, text in zip(paths, texts, strict=True):
        path.write_text(text, encoding="utf-8")
    return paths


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


TEXTS = ["The first document.", "A second, longer document about packing.", "Third!", "Fourth and last one."]


# -- every source kind --------------------------------------------------------------------------------------
def test_text_file_is_one_document(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello world, " * 10, encoding="utf-8")
    p = build(tmp_path, {"dataset_path": str(path)}, seq_len=16)
    assert epoch_rows(p) == expected_rows(["hello world, " * 10], 16)
    assert p.samples_per_epoch == (130 + 1) // 16 and p.train_tokens == p.samples_per_epoch * 16
    assert str(path) in p.description


def test_directory_reads_known_formats_recursively_in_path_order(tmp_path: Path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("bee", encoding="utf-8")
    (root / "a.md").write_text("ay", encoding="utf-8")
    (root / "sub" / "c.py").write_text("sea = 1", encoding="utf-8")
    (root / "notes.log").write_text("unknown extension: skipped in a directory", encoding="utf-8")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "d.txt").write_text("hidden", encoding="utf-8")
    [source] = training_sources(make_cfg(tmp_path, {"dataset_path": str(root)}))
    assert source.kind == "text"
    assert list(documents(source)) == ["ay", "bee", "sea = 1"]


def test_glob_reads_only_matching_files(tmp_path: Path):
    write_texts(tmp_path / "c", TEXTS[:2], ".txt")
    write_texts(tmp_path / "c", ["not me"], ".md")
    [source] = training_sources(make_cfg(tmp_path, {"dataset_path": str(tmp_path / "c" / "*.txt")}))
    assert list(documents(source)) == TEXTS[:2]
    p = build(tmp_path, {"dataset_path": str(tmp_path / "c" / "doc00?.txt")}, seq_len=8)
    assert epoch_rows(p) == expected_rows(TEXTS[:2], 8)


def test_data_dir_resolves_relative_paths(tmp_path: Path):
    write_texts(tmp_path / "store" / "c", TEXTS)
    cfg = make_cfg(tmp_path, {"dataset_path": "c", "data_dir": str(tmp_path / "store")})
    assert list(documents(training_sources(cfg)[0])) == TEXTS


def test_jsonl_with_text_field(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": t, "id": i} for i, t in enumerate(TEXTS)])
    p = build(tmp_path, {"dataset_path": str(path), "text_field": "body"}, seq_len=8)
    assert epoch_rows(p) == expected_rows(TEXTS, 8)


def test_jsonl_with_text_template(tmp_path: Path):
    records = [{"q": "2+2?", "a": "4"}, {"q": "Capital of France?", "a": "Paris"}]
    path = write_jsonl(tmp_path / "qa.json", records)
    cfg = make_cfg(tmp_path, {"dataset_path": str(path), "text_template": "Q: {q}\nA: {a}"})
    assert list(documents(training_sources(cfg)[0])) == ["Q: 2+2?\nA: 4", "Q: Capital of France?\nA: Paris"]


def test_csv(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"hello, csv",1\nsecond row,0\n', encoding="utf-8")
    cfg = make_cfg(tmp_path, {"dataset_path": str(path)})
    assert list(documents(training_sources(cfg)[0])) == ["hello, csv", "second row"]


def test_parquet(tmp_path: Path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": TEXTS, "n": list(range(len(TEXTS)))}), path)
    p = build(tmp_path, {"dataset_path": str(path)}, seq_len=8)
    assert epoch_rows(p) == expected_rows(TEXTS, 8)


@pytest.mark.parametrize("streaming", [False, True])
def test_local_files_are_read_without_the_network(tmp_path: Path, monkeypatch, streaming: bool):
    lookups = []

    def no_network(*args: Any, **kwargs: Any) -> None:
        lookups.append(args)
        raise OSError("the tests have no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    take(build(tmp_path, {"dataset_path": str(path), "streaming": streaming}, seq_len=8), 4)
    assert lookups == []  # datasets counts loads with a request to the Hub unless told not to


def test_npy_tokens_are_memory_mapped_and_cut_in_row_order(tmp_path: Path):
    tokens = (np.arange(5 * 7) % 250).astype(np.uint16).reshape(5, 7)  # 35 tokens: 4 sequences of 8, tail 3
    np.save(tmp_path / "tokens.npy", tokens)
    cfg = make_cfg(tmp_path, {"dataset_path": str(tmp_path / "tokens.npy")})
    [source] = training_sources(cfg)
    assert source.kind == "npy"
    [array] = token_files(source)
    assert isinstance(array, np.memmap) and array.shape == (35,)
    p = build_data(cfg, TOKENIZER, 8, eval_sequences=4)
    rows = p.loader.dataset.stores[0]
    assert all(isinstance(a, np.memmap) for a in rows.arrays)
    flat = tokens.reshape(-1).tolist()
    assert epoch_rows(p) == sorted(flat[k * 8 : (k + 1) * 8] for k in range(4))
    assert EOS not in take(p, 4).flatten().tolist()  # tokens already: no EOS added


def test_save_to_disk_directory(tmp_path: Path):
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS[:2]})}).save_to_disk(str(tmp_path / "dd"))
    [source] = training_sources(make_cfg(tmp_path, {"dataset_path": str(tmp_path / "saved")}))
    assert source.kind == "disk" and list(documents(source)) == TEXTS
    [source] = training_sources(make_cfg(tmp_path, {"dataset_path": str(tmp_path / "dd")}))
    assert list(documents(source)) == TEXTS[:2]


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_name_loads_through_datasets_with_the_configured_arguments(tmp_path: Path, monkeypatch, streaming: bool):
    calls = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({"sentence": TEXTS})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = {"dataset_path": "nyu-mll/glue", "config": "sst2", "split": "validation", "text_field": "sentence"}
    p = build(tmp_path, {**data, "streaming": streaming, "shuffle": False}, seq_len=8)
    rows = take(p, len(stream(TEXTS)) // 8)
    expected = (
        ("nyu-mll/glue", "sst2"),
        {"split": "validation", "streaming": streaming, "cache_dir": str(tmp_path / "hf-cache")},
    )
    assert calls[0] == expected and all(call == expected for call in calls)  # a stream opens it again each pass
    assert sorted(rows.tolist()) == expected_rows(TEXTS, 8)


def test_hub_name_that_cannot_be_loaded_is_a_data_error(tmp_path: Path, monkeypatch):
    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'someone/corpus' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"data\.dataset_path.*someone/corpus.*without a download.*local path"):
        build(tmp_path, {"dataset_path": "someone/corpus"})


def test_builtin_corpus_is_the_standard_library_without_tests(tmp_path: Path):
    files = builtin_corpus_files()
    assert len(files) > 100
    assert all(f.suffix == ".py" for f in files)
    assert not any(STDLIB_EXCLUDED & set(f.parts) for f in files)
    assert not any(part in ("test", "tests") for f in files for part in f.parts)
    assert files == sorted(files)
    p = build(tmp_path, {"num_samples": 3, "shuffle": False}, seq_len=64)
    assert p.description.startswith("built-in corpus: Python 3.") and "(3 files," in p.description
    texts = [t for t in (f.read_text(encoding="utf-8", errors="replace") for f in files[:10]) if t][:3]
    assert p.samples_per_epoch == len(stream(texts)) // 64
    assert take(p, 1)[0].tolist() == stream(texts)[:64]


def test_dummy_data_is_deterministic_random_tokens(tmp_path: Path):
    data = {"use_dummy_data": True, "num_samples": 12, "validation_fraction": 0.1}
    a = build(tmp_path, data, seq_len=16, eval_sequences=3)
    b = build(tmp_path, data, seq_len=16, eval_sequences=3)
    c = build(tmp_path, data, seq_len=16, eval_sequences=3, seed=7)
    assert a.samples_per_epoch == 12 and a.validation.shape == (3, 16)
    assert torch.equal(take(a, 12), take(b, 12)) and torch.equal(a.validation, b.validation)
    assert not torch.equal(take(a, 12), take(c, 12))
    rows = take(a, 12)
    assert rows.dtype == torch.int64 and 0 <= rows.min() and rows.max() < len(TOKENIZER)
    assert len({tuple(r) for r in rows.tolist()}) == 12  # one epoch: every sequence once
    assert not {tuple(r) for r in a.validation.tolist()} & {tuple(r) for r in rows.tolist()}


# -- errors -----------------------------------------------------------------------------------------------------
def test_missing_path_names_the_key_and_the_path(tmp_path: Path):
    missing = tmp_path / "nope" / "train.txt"
    with pytest.raises(DataError, match=r"data\.dataset_path: .*nope/train\.txt does not exist"):
        build(tmp_path, {"dataset_path": str(missing)})
    with pytest.raises(DataError, match=r"data\.dataset_path: the pattern .*matches no data files"):
        build(tmp_path, {"dataset_path": str(tmp_path / "*.jsonl")})


def test_empty_file_and_empty_directory_are_data_errors(tmp_path: Path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.dataset_path: .*empty\.txt holds no documents"):
        build(tmp_path, {"dataset_path": str(tmp_path / "empty.txt")})
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match=r"data\.dataset_path: the directory .*void holds no data files"):
        build(tmp_path, {"dataset_path": str(tmp_path / "void")})
    (tmp_path / "short.txt").write_text("tiny", encoding="utf-8")
    with pytest.raises(DataError, match=r"less than one\s+sequence of 32 tokens"):
        build(tmp_path, {"dataset_path": str(tmp_path / "short.txt")})


def test_missing_text_field_names_field_file_and_available_fields(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"content": "x", "id": 1}])
    with pytest.raises(DataError, match=r"data\.text_field: .*d\.jsonl have no field `text` \(fields: content, id\)"):
        build(tmp_path, {"dataset_path": str(path)})
    with pytest.raises(DataError, match=r"data\.text_template: .*uses field `answer`.*fields: content, id"):
        build(tmp_path, {"dataset_path": str(path), "text_template": "{content} {answer}"})


def test_npy_ids_outside_the_vocabulary_are_a_data_error(tmp_path: Path):
    np.save(tmp_path / "t.npy", np.array([1, 2, 300, 4] * 16, dtype=np.int32))
    with pytest.raises(DataError, match=r"data\.dataset_path: .*t\.npy holds token id 300, outside .*\[0, 258\)"):
        build(tmp_path, {"dataset_path": str(tmp_path / "t.npy")}, seq_len=8)
