"""Batch loaders: resuming at any sample, epochs over worker processes, streaming, and pickling for workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from stackwise.train.data import DataError
from stackwise.train.loaders import MixtureOrder, SequenceDataset

from .test_data import build, stream, tagged_docs, tags_in, take, write_jsonl, write_texts


def corpus(tmp_path: Path, n: int = 40) -> str:
    write_texts(tmp_path / "c", tagged_docs(n))
    return str(tmp_path / "c")


def assert_resumes(p, starts: list[int], n: int = 12) -> None:
    """batches(k) yields what batches(0) yields after its first k samples."""
    whole = take(p, max(starts) + n)
    for k in starts:
        assert torch.equal(take(p, n, start=k), whole[k : k + n]), f"resuming at sample {k}"


def test_map_style_resumes_at_any_sample(tmp_path: Path):
    p = build(tmp_path, {"dataset_path": corpus(tmp_path)})
    assert p.samples_per_epoch == 40
    assert_resumes(p, [0, 1, 7, 38, 45])
    first, second = take(p, 80).split(40)
    assert sorted(tags_in(first)) == sorted(tags_in(second)) == list(range(40))  # every epoch covers all
    assert tags_in(first) != tags_in(second) != list(range(40))  # each in its own shuffled order


def test_unshuffled_samples_come_in_order(tmp_path: Path):
    p = build(tmp_path, {"dataset_path": corpus(tmp_path), "shuffle": False})
    assert tags_in(take(p, 50)) == list(range(40)) + list(range(10))


def test_mixture_resumes_at_any_sample(tmp_path: Path):
    write_texts(tmp_path / "a", tagged_docs(7))
    write_texts(tmp_path / "b", ["b" * 31] * 5)
    p = build(tmp_path, {"datasets": [{"path": str(tmp_path / "a"), "weight": 2}, {"path": str(tmp_path / "b")}]})
    assert p.samples_per_epoch == 12
    assert_resumes(p, [3, 9, 13, 30])


def test_resuming_far_into_a_mixture_matches_counting_from_zero():
    order = MixtureOrder([1, 2, 7], seed=5, sizes=[11, 13, 17])
    start = 10**6
    before = next(order.pairs(start - 5))
    assert np.array_equal(next(order.pairs(start))[:100], before[5:105])
    assert order.counts_before(start).sum() == start


def test_map_style_workers_read_each_sequence_once_per_epoch(tmp_path: Path):
    p = build(tmp_path, {"dataset_path": corpus(tmp_path), "num_workers": 2})
    rows = take(p, 40)
    assert sorted(tags_in(rows)) == list(range(40))
    assert torch.equal(rows, take(build(tmp_path, {"dataset_path": corpus(tmp_path)}), 40))  # same as in-process


@pytest.mark.parametrize("kind", ["text", "jsonl"])
def test_streaming_workers_read_each_document_once_per_pass(tmp_path: Path, kind: str):
    path = corpus(tmp_path)
    if kind == "jsonl":  # read through datasets' own streaming, which must not shard by worker itself
        path = str(write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in tagged_docs(40)]))
    p = build(tmp_path, {"dataset_path": path, "streaming": True, "num_workers": 2, "shuffle_buffer": 8})
    assert p.samples_per_epoch is None and p.train_tokens is None and p.unigram_entropy is None
    rows = take(p, 40)
    assert sorted(tags_in(rows)) == list(range(40))
    worker0 = [t for b in range(0, 10, 2) for t in tags_in(rows[4 * b : 4 * b + 4])]  # blocks 0, 2, 4, ...
    assert all(t % 2 == 0 for t in worker0) and worker0 != sorted(worker0)  # its shard, shuffled


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_resumes_at_any_sample(tmp_path: Path, workers: int):
    p = build(tmp_path, {"dataset_path": corpus(tmp_path, 30), "streaming": True, "num_workers": workers})
    assert_resumes(p, [1, 6, 29, 33])


def test_streaming_without_shuffle_packs_like_the_map_style_pipeline(tmp_path: Path):
    texts = ["short", "a somewhat longer document", "x" * 50, "end"] * 3
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts])
    data = {"dataset_path": str(path), "shuffle": False}
    streamed = take(build(tmp_path, {**data, "streaming": True}, seq_len=8), 40)
    assert torch.equal(streamed, take(build(tmp_path, data, seq_len=8), 40))
    tokens = stream(texts)
    assert streamed[0].tolist() == tokens[:8] and streamed[5].tolist() == tokens[40:48]


def test_streaming_validation_is_held_out_of_the_stream(tmp_path: Path):
    data = {"dataset_path": corpus(tmp_path), "streaming": True, "validation_fraction": 0.25}
    p = build(tmp_path, data, eval_sequences=4)
    assert tags_in(p.validation) == [3, 7, 11, 15]
    assert set(tags_in(take(p, 60))) == {i for i in range(40) if i % 4 != 3}


def test_streaming_token_array(tmp_path: Path):
    tokens = np.arange(10 * 8, dtype=np.uint16) % 200
    np.save(tmp_path / "t.npy", tokens)
    data = {"dataset_path": str(tmp_path / "t.npy"), "streaming": True, "shuffle": False, "validation_fraction": 0.2}
    p = build(tmp_path, data, seq_len=8, eval_sequences=5)
    rows = tokens.reshape(10, 8)
    assert p.validation.tolist() == rows[[4, 9]].tolist()  # every 5th sequence held out
    assert take(p, 8).tolist() == rows[[0, 1, 2, 3, 5, 6, 7, 8]].tolist()


def test_map_dataset_pickles_without_the_token_arrays(tmp_path: Path):
    np.save(tmp_path / "t.npy", np.arange(4096 * 8, dtype=np.int32) % 250)
    p = build(tmp_path, {"dataset_path": str(tmp_path / "t.npy")}, seq_len=8)
    dataset = p.loader.dataset
    assert isinstance(dataset, SequenceDataset)
    blob = pickle.dumps(dataset)
    assert len(blob) < 4096 * 8  # the memory map is reopened by each worker, not copied to it
    again = pickle.loads(blob)
    assert torch.equal(
        torch.stack(again.__getitems__([[0, 3], [0, 100]])), torch.stack(dataset.__getitems__([[0, 3], [0, 100]]))
    )
    assert again[[0, 3]].tolist() == list(range(24, 32))


def test_a_stream_without_documents_is_a_data_error(tmp_path: Path):
    # With data.num_workers 2 and one document the second reader gets none: the same check, in a worker.
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": ""}, {"text": None}])
    p = build(tmp_path, {"dataset_path": str(path), "streaming": True})
    with pytest.raises(DataError, match=r"data\.dataset_path: .*d\.jsonl has no training documents; add documents"):
        take(p, 8)
