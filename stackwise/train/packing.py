"""Token sequences for training: tokenising and packing documents, the validation split, and building the pipeline.

Sample `g` of a run is a pure function of (config, g), so `batches(g)` resumes a run exactly: this module decides
what the sequences are, loaders.py in which order they are read.

- Tokenise and pack: each document becomes its ids and an EOS; a source's documents are concatenated in order and
  cut into consecutive `seq_len` sequences; the short tail is dropped.
- Validation split: data.py's `label_documents` holds out every k-th document (one document of look-ahead, so it
  works on streams too); `.npy` token arrays hold out every k-th sequence by the same rule, computed, not listed
  (loaders.py's `split_index`, beside the token-file store that uses it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from .data import (
    DataError,
    Source,
    check_token_ids,
    documents,
    holdout_period,
    label_documents,
    training_sources,
    validation_source,
)
from .loaders import (
    DUMMY_STREAM,
    DUMMY_VALIDATION_STREAM,
    ArrayRows,
    DummyRows,
    MapLoader,
    MixtureOrder,
    Rows,
    SequenceDataset,
    StreamLoader,
    StreamSettings,
    TokenFileRows,
)

if TYPE_CHECKING:
    from stackwise.config.schema import StackwiseConfig

T = TypeVar("T")
TOKENIZE_BATCH = 256  # documents per tokenizer call
COUNT_CHUNK = 1 << 22  # tokens per read when counting the tokens of a token file
DEFAULT_DUMMY_SAMPLES = 1024


# -- tokenise and pack -------------------------------------------------------------------------------------------
def token_dtype(vocab_size: int) -> type[np.integer]:
    """The smallest dtype packed sequences are stored in: uint16 for a vocabulary up to 65,535 ids, else int32."""
    return np.uint16 if vocab_size <= 65535 else np.int32


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def tokenize(docs: Iterable[str], tokenizer: Any, dtype: Any) -> Iterator[np.ndarray]:
    """One flat array per batch of documents: each document's ids followed by EOS."""
    eos = tokenizer.eos_token_id
    for batch in _batched(docs, TOKENIZE_BATCH):
        ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        total = sum(map(len, ids)) + len(ids)
        yield np.fromiter(chain.from_iterable([*x, eos] for x in ids), dtype=dtype, count=total)


def pack(chunks: Iterable[np.ndarray], seq_len: int, dtype: Any) -> np.ndarray:
    """(n, seq_len) array: sequence k is tokens [k*seq_len, (k+1)*seq_len) of the concatenated chunks."""
    parts = list(chunks)
    flat = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
    n = len(flat) // seq_len
    return flat[: n * seq_len].reshape(n, seq_len)


def pack_stream(chunks: Iterable[np.ndarray], seq_len: int) -> Iterator[np.ndarray]:
    """The sequences of `pack`, produced as the chunks arrive."""
    carry: np.ndarray | None = None
    for chunk in chunks:
        buf = chunk if carry is None else np.concatenate([carry, chunk])
        n = len(buf) // seq_len
        for k in range(n):
            yield buf[k * seq_len : (k + 1) * seq_len]
        carry = buf[n * seq_len :]


# -- sources into sequences -----------------------------------------------------------------------------------
@dataclass
class Packing:
    """How every source becomes sequences (pickled into streaming workers)."""

    tokenizer: Any
    seq_len: int
    vocab_size: int  # token-file ids must be below it
    holdout: int | None  # every holdout-th document is validation (None: no split)
    limit: int | None  # data.num_samples: documents (sequences, for token files) read per source

    def documents(self, source: Source, held_out: bool) -> Iterator[str]:
        """The training (or held-out) documents of a source, lazily."""
        docs = label_documents(islice(documents(source), self.limit), self.holdout)
        return (doc for held, doc in docs if held == held_out)

    def sequences(self, docs: Iterable[str]) -> Iterator[np.ndarray]:
        return pack_stream(tokenize(docs, self.tokenizer, token_dtype(len(self.tokenizer))), self.seq_len)

    def token_rows(self, source: Source, held_out: bool, split: bool = True) -> TokenFileRows:
        holdout, limit = (self.holdout, self.limit) if split else (None, None)
        return TokenFileRows(source, self.seq_len, holdout, validation=held_out, limit=limit)

    def first_rows(self, rows: Rows, keep: int, source: Source) -> np.ndarray:
        out = rows.rows(np.arange(min(keep, len(rows))))
        check_token_ids(out, self.vocab_size, source.where(), source.key)
        return out


# -- building the pipeline ------------------------------------------------------------------------------------------
@dataclass
class DataPipeline:
    """Training batches and fixed validation sequences, with the figures the run summary reports."""

    seq_len: int  # L: tokens per sequence
    batch_size: int
    samples_per_epoch: int | None  # packed training sequences in one pass (None when streaming)
    validation: torch.Tensor | None  # (N, L) int64, fixed order; None without validation data
    train_tokens: int | None  # tokens in the training split (None when streaming)
    unigram_entropy: float | None  # nats, of the training split's token frequencies (None when streaming)
    description: str  # one line for the run summary
    loader: Callable[[int], Iterator[torch.Tensor]] = field(repr=False)  # start sample -> batches

    def batches(self, start_sample: int = 0) -> Iterator[torch.Tensor]:
        """Endless (batch_size, L) int64 batches from global sample `start_sample` on.

        Deterministic: `batches(k)` yields what `batches(0)` yields after its first k samples. A map-style
        pipeline jumps there directly; a streaming one re-reads its sources up to sample k.
        """
        return self.loader(start_sample)


def build_data(cfg: StackwiseConfig, tokenizer: Any, seq_len: int, *, eval_sequences: int) -> DataPipeline:
    """The training data of `cfg.data`, packed to `seq_len` tokens; `eval_sequences` validation sequences are kept."""
    d = cfg.data
    if d.use_dummy_data:
        return _dummy(cfg, tokenizer, seq_len, eval_sequences)
    sources = training_sources(cfg)
    separate = validation_source(cfg)
    holdout = None if separate is not None else holdout_period(d.validation_fraction)
    vocab = cfg.model.vocab_size or len(tokenizer)
    pk = Packing(tokenizer, seq_len, vocab, holdout, d.num_samples)
    held = None
    if separate is not None and eval_sequences:
        if separate.kind == "npy":
            held = pk.first_rows(pk.token_rows(separate, held_out=False, split=False), eval_sequences, separate)
        else:
            held = _stack(islice(pk.sequences(documents(separate)), eval_sequences), seq_len)
        if not len(held):
            raise DataError(
                f"data.validation_path: {separate.where()} holds less than one sequence of {seq_len} tokens"
            )
    if any(s.streaming for s in sources):
        return _streaming(cfg, sources, pk, held, separate, eval_sequences)
    packed = [_pack(s, pk, eval_sequences) for s in sources]
    if separate is None:
        held = _interleave([p.validation for p in packed], eval_sequences)
    sizes = [len(p.rows) for p in packed]
    order = MixtureOrder([s.weight for s in sources], cfg.training.seed, sizes, d.shuffle)
    text = "; ".join(_source_text(s, p, seq_len, len(sources)) for s, p in zip(sources, packed, strict=True))
    return DataPipeline(
        seq_len,
        cfg.training.batch_size,
        sum(sizes),
        _tensor(held),
        sum(sizes) * seq_len,
        _entropy([p.counts for p in packed]),
        text + _validation_text(held, separate, holdout),
        MapLoader(SequenceDataset([p.rows for p in packed], seq_len), order, cfg.training.batch_size, d.num_workers),
    )


def _streaming(
    cfg: StackwiseConfig,
    sources: list[Source],
    pk: Packing,
    held: np.ndarray | None,
    separate: Source | None,
    eval_sequences: int,
) -> DataPipeline:
    d = cfg.data
    if separate is None and pk.holdout is not None:
        held = _interleave([_held_out(s, pk, eval_sequences) for s in sources], eval_sequences)
    settings = StreamSettings(
        sources,
        pk,
        cfg.training.seed,
        d.shuffle_buffer if d.shuffle else 0,
        max(1, d.num_workers),
        cfg.training.batch_size,
    )
    names = ", ".join(s.label for s in sources)
    text = f"streaming {names} (shuffle buffer {settings.shuffle_buffer}, {settings.workers} reader(s))"
    text += _validation_text(held, separate, pk.holdout)
    loader = StreamLoader(settings, d.num_workers)
    return DataPipeline(pk.seq_len, cfg.training.batch_size, None, _tensor(held), None, None, text, loader)


def _held_out(source: Source, pk: Packing, keep: int) -> np.ndarray:
    """The first `keep` held-out sequences of a streamed source, read lazily."""
    if source.kind == "npy":
        return pk.first_rows(pk.token_rows(source, held_out=True), keep, source)
    return _stack(islice(pk.sequences(pk.documents(source, held_out=True)), keep), pk.seq_len)


@dataclass
class _Packed:
    """One map-style source, tokenised and packed."""

    rows: Rows
    validation: np.ndarray  # (m, L) held-out sequences, at most eval_sequences
    documents: int  # documents read (sequences, for token files), held-out ones included
    counts: np.ndarray  # training-token frequencies


def _pack(source: Source, pk: Packing, keep: int) -> _Packed:
    if source.kind == "npy":
        rows = pk.token_rows(source, held_out=False)
        if not len(rows):
            raise DataError(f"{source.key}: {source.where()} holds less than one sequence of {pk.seq_len} tokens")
        validation = pk.first_rows(pk.token_rows(source, held_out=True), keep, source)
        return _Packed(rows, validation, rows.total, _token_counts(rows, pk.vocab_size, source))
    held: list[str] = []
    read = 0

    def training_documents() -> Iterator[str]:
        # One pass over the source: the held-out documents are kept aside on the way.
        nonlocal read
        for is_held, doc in label_documents(islice(documents(source), pk.limit), pk.holdout):
            read += 1
            if is_held:
                held.append(doc)
            else:
                yield doc

    dtype = token_dtype(len(pk.tokenizer))
    train = pack(tokenize(training_documents(), pk.tokenizer, dtype), pk.seq_len, dtype)
    if read == 0:
        raise DataError(f"{source.key}: {source.where()} holds no documents (empty files, or every text is empty)")
    if not len(train):
        raise DataError(
            f"{source.key}: the {read - len(held)} training documents of {source.where()} hold less than one "
            f"sequence of {pk.seq_len} tokens; add data or shorten training.seq_len"
        )
    validation = _stack(islice(pk.sequences(held), keep), pk.seq_len)
    return _Packed(ArrayRows(train), validation, read, np.bincount(train.ravel(), minlength=pk.vocab_size))


def _dummy(cfg: StackwiseConfig, tokenizer: Any, seq_len: int, eval_sequences: int) -> DataPipeline:
    d, seed, vocab = cfg.data, cfg.training.seed, len(tokenizer)
    size = d.num_samples or DEFAULT_DUMMY_SAMPLES
    rows = DummyRows(size, seq_len, vocab, seed, DUMMY_STREAM)
    validation = None
    if eval_sequences and (d.validation_fraction > 0 or d.validation_path is not None):
        validation = DummyRows(eval_sequences, seq_len, vocab, seed, DUMMY_VALIDATION_STREAM).rows(
            np.arange(eval_sequences)
        )
    order = MixtureOrder([1.0], seed, [size], d.shuffle)
    return DataPipeline(
        seq_len,
        cfg.training.batch_size,
        size,
        _tensor(validation),
        size * seq_len,
        math.log(vocab),  # the tokens are uniform by construction
        f"dummy data: {size:,} random sequences of {seq_len} tokens (ids < {vocab})",
        MapLoader(SequenceDataset([rows], seq_len), order, cfg.training.batch_size, d.num_workers),
    )


def _token_counts(rows: Rows, vocab: int, source: Source) -> np.ndarray:
    """Token frequencies of a token file's training sequences, read in chunks; every id is checked on the way."""
    counts = np.zeros(vocab, dtype=np.int64)
    step = max(1, COUNT_CHUNK // rows.seq_len)
    for start in range(0, len(rows), step):
        part = rows.rows(np.arange(start, min(len(rows), start + step)))
        check_token_ids(part, vocab, source.where(), source.key)
        counts += np.bincount(part.ravel(), minlength=vocab)
    return counts


def _stack(sequences: Iterable[np.ndarray], seq_len: int) -> np.ndarray:
    rows = list(sequences)
    return np.stack(rows) if rows else np.empty((0, seq_len), dtype=np.int64)


def _interleave(parts: Sequence[np.ndarray], keep: int) -> np.ndarray:
    """Round-robin over the sources' validation sequences, so that every source is evaluated; the first `keep`."""
    order = sorted((i, s) for s, part in enumerate(parts) for i in range(len(part)))[:keep]
    return _stack((parts[s][i] for i, s in order), parts[0].shape[1])


def _tensor(sequences: np.ndarray | None) -> torch.Tensor | None:
    if sequences is None or not len(sequences):
        return None
    return torch.from_numpy(np.asarray(sequences, dtype=np.int64))


def _entropy(counts: Sequence[np.ndarray]) -> float:
    """Entropy in nats of the summed token counts (arrays may differ in length: bincount stops at the largest id)."""
    total = np.zeros(max(map(len, counts)), dtype=np.int64)
    for c in counts:
        total[: len(c)] += c
    p = total[total > 0] / total.sum()
    return float(-(p * np.log(p)).sum())


def _human(n: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def _source_text(source: Source, packed: _Packed, seq_len: int, sources: int) -> str:
    unit = {"builtin": "files", "text": "files", "npy": "sequences"}.get(source.kind, "documents")
    weight = f" x{source.weight:g}" if sources > 1 else ""
    return f"{source.label}{weight} ({packed.documents:,} {unit}, {_human(len(packed.rows) * seq_len)} tokens)"


def _validation_text(held: np.ndarray | None, separate: Source | None, holdout: int | None) -> str:
    if separate is not None:
        return f"; validation: {0 if held is None else len(held)} sequences of {separate.label}"
    if holdout is None:
        return "; no validation"
    if held is None or not len(held):
        return f"; no validation: the held-out documents (every {holdout}th) fill no whole sequence"
    return f"; validation: {len(held)} sequences from every {holdout}th document, held out"
