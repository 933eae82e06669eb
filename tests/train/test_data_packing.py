"""Packing boundaries, the validation split, document limits, unigram entropy and mixture proportions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from stackwise.train.data import DataError, holdout_period, label_documents, training_documents
from stackwise.train.loaders import MixtureOrder, split_index, split_sizes
from stackwise.train.packing import pack, pack_stream

from .test_data import EOS, build, epoch_rows, make_cfg, stream, tagged_docs, tags_in, take, write_jsonl, write_texts


def test_packing_puts_eos_between_documents_and_drops_the_tail(tmp_path: Path):
    write_texts(tmp_path / "c", ["ab", "cde", "f"])
    p = build(tmp_path, {"dataset_path": str(tmp_path / "c"), "shuffle": False}, seq_len=4)
    a, b, c, d, e, f = (ord(x) for x in "abcdef")
    # stream: a b EOS c | d e EOS f | EOS (tail, dropped)
    assert p.samples_per_epoch == 2
    assert take(p, 4).tolist() == [[a, b, EOS, c], [d, e, EOS, f]] * 2


def test_pack_and_pack_stream_cut_the_same_sequences():
    chunks = [np.arange(5), np.arange(5, 6), np.arange(6, 23)]
    packed = pack(chunks, 4, np.int64)
    assert packed.tolist() == [list(range(k * 4, k * 4 + 4)) for k in range(5)]  # 23 tokens: tail of 3 dropped
    assert [s.tolist() for s in pack_stream(chunks, 4)] == packed.tolist()


def test_every_kth_document_is_held_out_or_else_the_last():
    assert holdout_period(0.01) == 100 and holdout_period(0.3) == 3 and holdout_period(0.0) is None
    assert [i for i, (held, _) in enumerate(label_documents(range(7), 3)) if held] == [2, 5]
    assert [held for held, _ in label_documents(range(2), 3)] == [False, True]  # none by the rule: the last
    assert [held for held, _ in label_documents(range(1), 3)] == [False]
    assert [held for held, _ in label_documents(range(4), None)] == [False] * 4


@pytest.mark.parametrize("k", [2, 3, 7])
def test_sequence_split_arithmetic_matches_the_document_rule(k: int):
    for n in range(12):
        held = [i for i, (h, _) in enumerate(label_documents(range(n), k)) if h]
        train = [i for i, (h, _) in enumerate(label_documents(range(n), k)) if not h]
        assert split_sizes(n, k) == (len(train), len(held))
        assert split_index(np.arange(len(train)), n, k, validation=False).tolist() == train
        assert split_index(np.arange(len(held)), n, k, validation=True).tolist() == held


def test_validation_documents_never_reach_training(tmp_path: Path):
    write_texts(tmp_path / "c", tagged_docs(40))
    p = build(tmp_path, {"dataset_path": str(tmp_path / "c"), "validation_fraction": 0.25}, eval_sequences=100)
    held = {i for i in range(40) if i % 4 == 3}
    assert p.validation is not None and p.validation.dtype == torch.int64 and p.validation.shape[1] == 32
    assert set(tags_in(p.validation)) <= held and len(set(tags_in(p.validation))) >= 8
    trained = set(tags_in(take(p, 3 * p.samples_per_epoch)))
    assert trained == set(range(40)) - held
    assert "validation: " in p.description


def test_validation_keeps_the_first_eval_sequences_in_order(tmp_path: Path):
    write_texts(tmp_path / "c", tagged_docs(40))
    data = {"dataset_path": str(tmp_path / "c"), "validation_fraction": 0.25}
    full = build(tmp_path, data, eval_sequences=100).validation
    few = build(tmp_path, data, eval_sequences=3).validation
    assert few.shape == (3, 32) and torch.equal(few, full[:3])
    assert tags_in(full) == sorted(tags_in(full))  # source order, no shuffle
    assert build(tmp_path, {**data, "validation_fraction": 0}).validation is None


def test_validation_path_is_read_separately(tmp_path: Path):
    write_texts(tmp_path / "train", tagged_docs(20))
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"text": d} for d in tagged_docs(60)[40:]])
    p = build(tmp_path, {"dataset_path": str(tmp_path / "train"), "validation_path": str(valid)}, eval_sequences=5)
    assert p.validation.shape == (5, 32) and p.validation[0].tolist() == stream(tagged_docs(60)[40:])[:32]
    assert set(tags_in(take(p, p.samples_per_epoch))) == set(range(20))  # all training documents kept


def test_num_samples_caps_the_documents_read(tmp_path: Path):
    write_texts(tmp_path / "c", tagged_docs(30))
    p = build(tmp_path, {"dataset_path": str(tmp_path / "c"), "num_samples": 6, "validation_fraction": 0.25})
    seen = set(tags_in(take(p, p.samples_per_epoch))) | set(tags_in(p.validation))
    assert seen <= set(range(6)) and "(6 files" in p.description


def test_unigram_entropy_is_that_of_the_training_tokens(tmp_path: Path):
    write_texts(tmp_path / "c", ["abab", "aaaa"])
    p = build(tmp_path, {"dataset_path": str(tmp_path / "c")}, seq_len=5)
    # Training split: "abab" EOS (the second sequence, "aaaa" EOS, too): a 6, b 2, EOS 2 of 10 tokens.
    freqs = np.array([6, 2, 2]) / 10
    assert epoch_rows(p) == sorted([[*b"abab", EOS], [*b"aaaa", EOS]])
    assert p.unigram_entropy == pytest.approx(float(-(freqs * np.log(freqs)).sum()))


def test_mixture_draws_sources_in_proportion_to_their_weights():
    order = MixtureOrder([1, 2, 7], seed=3, sizes=[10, 20, 30])
    share = np.bincount(order.sources(0, 20_000), minlength=3) / 20_000
    assert np.allclose(share, [0.1, 0.2, 0.7], atol=0.02)
    assert not np.array_equal(order.sources(0, 100), MixtureOrder([1, 2, 7], seed=4).sources(0, 100))


def test_mixture_walks_each_source_in_a_new_permutation_per_pass():
    order = MixtureOrder([1, 1], seed=0, sizes=[5, 8])
    pairs = np.concatenate([next(order.pairs(0))])
    for s, size in ((0, 5), (1, 8)):
        seq = pairs[pairs[:, 0] == s, 1]
        passes = [seq[i : i + size].tolist() for i in range(0, 4 * size, size)]
        assert all(sorted(p) == list(range(size)) for p in passes)
        assert len({tuple(p) for p in passes}) > 1
    in_order = MixtureOrder([1, 1], seed=0, sizes=[5, 8], shuffle=False)
    seq = next(in_order.pairs(0))
    assert seq[seq[:, 0] == 0, 1][:10].tolist() == [0, 1, 2, 3, 4] * 2


def test_mixture_pipeline_samples_every_source_by_weight(tmp_path: Path):
    write_texts(tmp_path / "a", ["a" * 31] * 20)
    write_texts(tmp_path / "b", ["b" * 31] * 20)
    mix = [{"path": str(tmp_path / "a"), "weight": 1}, {"path": str(tmp_path / "b"), "weight": 3, "name": "bees"}]
    p = build(tmp_path, {"datasets": mix})
    assert p.samples_per_epoch == 40 and "bees x3" in p.description
    first = take(p, 400)[:, 0]
    assert math.isclose((first == ord("b")).float().mean().item(), 0.75, abs_tol=0.07)


def test_named_data_mix_from_a_mixes_file(tmp_path: Path):
    write_texts(tmp_path / "a", tagged_docs(8))
    mixes = tmp_path / "datasets.yaml"
    mixes.write_text(
        f"data_mixes:\n  small:\n    datasets:\n      - path: {tmp_path / 'a'}\n        name: tagged\n",
        encoding="utf-8",
    )
    p = build(tmp_path, {"data_mixes_file": str(mixes), "data_mix": "small"})
    assert p.description.startswith("tagged (8 files")
    assert set(tags_in(take(p, p.samples_per_epoch))) == set(range(8))


def test_mixture_validation_takes_sequences_from_every_source_in_turn(tmp_path: Path):
    write_texts(tmp_path / "a", tagged_docs(20))
    write_texts(tmp_path / "b", ["b" * 31] * 20)
    mix = [{"path": str(tmp_path / "a")}, {"path": str(tmp_path / "b")}]
    p = build(tmp_path, {"datasets": mix, "validation_fraction": 0.25}, eval_sequences=4)
    assert [row[0] for row in p.validation.tolist()] == [ord("<"), ord("b")] * 2
    assert tags_in(p.validation) == [3, 7]


def test_no_validation_sequences_asked_for(tmp_path: Path):
    write_texts(tmp_path / "c", tagged_docs(8))
    data = {"dataset_path": str(tmp_path / "c"), "validation_path": str(tmp_path / "c" / "doc000.txt")}
    assert build(tmp_path, data, eval_sequences=0).validation is None
    assert build(tmp_path, data, eval_sequences=3).validation.shape == (1, 32)


def test_training_documents_for_a_tokenizer_leave_out_validation(tmp_path: Path):
    docs = tagged_docs(12)
    write_texts(tmp_path / "c", docs)
    cfg = make_cfg(tmp_path, {"dataset_path": str(tmp_path / "c"), "validation_fraction": 0.25, "num_samples": 10})
    assert list(training_documents(cfg)) == [d for i, d in enumerate(docs[:10]) if i % 4 != 3]
    with pytest.raises(DataError, match=r"data\.use_dummy_data"):
        list(training_documents(make_cfg(tmp_path, {"use_dummy_data": True})))
