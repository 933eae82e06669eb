"""Token sequences for training: tokenising, packing, the validation split, the mixture order and the batch loaders.

Longer than the house threshold because these parts share one contract, and splitting them would scatter it:
sample `g` of a run is a pure function of (config, g), so `batches(g)` resumes a run exactly.

- Tokenise and pack: each document becomes its ids and an EOS; a source's documents are concatenated in order and
  cut into consecutive `seq_len` sequences; the short tail is dropped.
- Validation split: data.py's `label_documents` holds out every k-th document (one document of look-ahead, so it
  works on streams too); `.npy` token arrays hold out every k-th sequence by the same rule, computed, not listed.
- Mixture order: sample g reads the source drawn by a numpy Generator seeded with (seed, g // 4096), and that
  source's next sequence, in a permutation seeded with (seed, source, pass). Any start is replayed by counting
  draws, vectorised, so resuming at sample 10^6 costs milliseconds.
  With data.shuffle false each source is read in order; the weighted draws between sources stay random.
- Map-style loading (the default): a `Dataset` of (source, sequence) pairs and a batch sampler in the main process.
- Streaming (data.streaming, or any source's `streaming`; then every source is read lazily): an `IterableDataset`. Logical worker w of W reads every W-th training
  document, shuffles them in a seeded buffer and packs them; it produces the blocks of `batch_size` samples
  b with b % W == w. The `DataLoader` returns worker results round-robin in order, so the stream is deterministic
  for a given num_workers. A stream has no index: `batches(g)` re-reads and drops the samples before g.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, count, islice
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from .data import (
    DataError,
    Source,
    check_token_ids,
    documents,
    holdout_period,
    label_documents,
    token_files,
    training_sources,
    validation_source,
)

if TYPE_CHECKING:
    from stackwise.config.schema import StackwiseConfig

T = TypeVar("T")
MIX_BLOCK = 4096  # mixture draws per seeded block
TOKENIZE_BATCH = 256  # documents per tokenizer call
COUNT_CHUNK = 1 << 22  # tokens per read when counting the tokens of a token file
# Distinct seed streams, so that no two uses of training.seed draw the same numbers.
MIX_STREAM, PERMUTATION_STREAM, SHUFFLE_STREAM, DUMMY_STREAM, DUMMY_VALIDATION_STREAM = range(5)
DEFAULT_DUMMY_SAMPLES = 1024


def _rng(seed: int, *stream: int) -> np.random.Generator:
    # SeedSequence takes non-negative ints; training.seed may be negative.
    return np.random.default_rng((seed % 2**64, *stream))


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


# -- validation split --------------------------------------------------------------------------------------------
def split_sizes(n: int, k: int | None) -> tuple[int, int]:
    """(training, validation) counts of n items under `label_documents`."""
    held = 0 if k is None or n < 2 else (n // k if n >= k else 1)
    return n - held, held


def split_index(j: np.ndarray, n: int, k: int | None, validation: bool) -> np.ndarray:
    """Position among the n items of the j-th training (or validation) item, without listing them."""
    if k is None or n < k:
        return j + (n - 1 if validation else 0)
    return j * k + k - 1 if validation else j // (k - 1) * k + j % (k - 1)


# -- sequence stores -----------------------------------------------------------------------------------------------
class ArrayRows:
    """Packed sequences held in memory."""

    def __init__(self, array: np.ndarray):
        self.array, self.seq_len = array, array.shape[1]

    def __len__(self) -> int:
        return len(self.array)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return self.array[idx]


class TokenFileRows:
    """The training (or validation) sequences of memory-mapped `.npy` token files.

    Sequences are cut per file (each file's tail dropped) and numbered across files. The memory maps are opened
    lazily and left out of pickles, so a DataLoader worker reopens the files instead of receiving their contents.
    """

    def __init__(self, source: Source, seq_len: int, k: int | None, validation: bool, limit: int | None):
        self.source, self.seq_len, self.k, self.validation = source, seq_len, k, validation
        self._arrays: list[np.ndarray] | None = None
        per_file = np.array([len(a) // seq_len for a in self.arrays], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(per_file)])
        self.total = int(min(self.starts[-1], limit or self.starts[-1]))
        self.size = split_sizes(self.total, k)[1 if validation else 0]

    @property
    def arrays(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._arrays = token_files(self.source)
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return self.size

    def rows(self, idx: np.ndarray) -> np.ndarray:
        global_idx = split_index(np.asarray(idx, dtype=np.int64), self.total, self.k, self.validation)
        files = np.searchsorted(self.starts, global_idx, side="right") - 1
        out = np.empty((len(global_idx), self.seq_len), dtype=np.result_type(*self.arrays))
        for f in np.unique(files):
            mask = files == f
            local = global_idx[mask] - self.starts[f]
            array = self.arrays[f]
            out[mask] = array[: (len(array) // self.seq_len) * self.seq_len].reshape(-1, self.seq_len)[local]
        return out


class DummyRows:
    """Random token sequences; sequence i comes from a generator seeded with (seed, stream, i), so any is at hand."""

    def __init__(self, size: int, seq_len: int, vocab_size: int, seed: int, stream: int):
        self.size, self.seq_len, self.vocab_size, self.seed, self.stream = size, seq_len, vocab_size, seed, stream

    def __len__(self) -> int:
        return self.size

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return np.stack(
            [_rng(self.seed, self.stream, int(i)).integers(0, self.vocab_size, self.seq_len) for i in idx]
        ).reshape(len(idx), self.seq_len)


Rows = ArrayRows | TokenFileRows | DummyRows


# -- mixture order -----------------------------------------------------------------------------------------------
class MixtureOrder:
    """Which source each global sample reads (weighted, seeded per block of draws) and which of its sequences."""

    def __init__(self, weights: Sequence[float], seed: int, sizes: Sequence[int] = (), shuffle: bool = True):
        self.cumulative = np.cumsum(weights) / sum(weights)
        self.seed, self.sizes, self.shuffle = seed, list(sizes), shuffle
        self._permutations: dict[int, tuple[int, np.ndarray]] = {}

    def sources(self, start: int, stop: int) -> np.ndarray:
        """Source index of each sample in [start, stop)."""
        if len(self.cumulative) == 1 or stop <= start:
            return np.zeros(max(0, stop - start), dtype=np.int64)
        first, last = start // MIX_BLOCK, (stop - 1) // MIX_BLOCK
        draws = np.concatenate([_rng(self.seed, MIX_STREAM, b).random(MIX_BLOCK) for b in range(first, last + 1)])
        picked = np.searchsorted(self.cumulative, draws, side="right").clip(max=len(self.cumulative) - 1)
        return picked[start - first * MIX_BLOCK : stop - first * MIX_BLOCK]

    def counts_before(self, start: int) -> np.ndarray:
        """How many of the samples [0, start) each source gave."""
        counts = np.zeros(len(self.cumulative), dtype=np.int64)
        if len(counts) == 1:
            return counts + start
        for block_start in range(0, start, MIX_BLOCK):
            counts += np.bincount(self.sources(block_start, min(start, block_start + MIX_BLOCK)), minlength=len(counts))
        return counts

    def pairs(self, start: int) -> Iterator[np.ndarray]:
        """Endless (n, 2) chunks of (source, sequence) for the samples from `start` on."""
        counts = self.counts_before(start)
        for chunk_start in count(start, MIX_BLOCK):
            src = self.sources(chunk_start, chunk_start + MIX_BLOCK)
            seq = np.empty_like(src)
            for s in range(len(counts)):
                mask = src == s
                taken = int(mask.sum())
                seq[mask] = self._sequences(s, counts[s] + np.arange(taken))
                counts[s] += taken
            yield np.stack([src, seq], axis=1)

    def _sequences(self, source: int, occurrence: np.ndarray) -> np.ndarray:
        size = self.sizes[source]
        passes, position = occurrence // size, occurrence % size
        if not self.shuffle:
            return position
        out = np.empty_like(position)
        for p in np.unique(passes):
            mask = passes == p
            out[mask] = self._permutation(source, int(p))[position[mask]]
        return out

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        cached = self._permutations.get(source)
        if cached is None or cached[0] != epoch:
            perm = _rng(self.seed, PERMUTATION_STREAM, source, epoch).permutation(self.sizes[source])
            self._permutations[source] = cached = (epoch, perm)
        return cached[1]


# -- map-style loading -----------------------------------------------------------------------------------------------
class SequenceDataset(Dataset):
    """Training sequences of every source, indexed by (source, sequence) pairs."""

    def __init__(self, stores: Sequence[Rows], seq_len: int):
        self.stores, self.seq_len = list(stores), seq_len

    def __len__(self) -> int:
        return sum(map(len, self.stores))

    def __getitem__(self, pair: Sequence[int]) -> torch.Tensor:
        return self.__getitems__([pair])[0]

    def __getitems__(self, pairs: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        # The DataLoader fetches a whole batch through this when it exists: one read per source, not per sample.
        index = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        out = np.empty((len(index), self.seq_len), dtype=np.int64)
        for s in np.unique(index[:, 0]):
            mask = index[:, 0] == s
            out[mask] = self.stores[s].rows(index[mask, 1])
        return list(torch.from_numpy(out))


class BatchOrder(Sampler):
    """Batches of (source, sequence) pairs for the global samples from `start` on, endlessly."""

    def __init__(self, order: MixtureOrder, batch_size: int, start: int):
        self.order, self.batch_size, self.start = order, batch_size, start

    def __iter__(self) -> Iterator[list[list[int]]]:
        pending: list[list[int]] = []
        for chunk in self.order.pairs(self.start):
            pending.extend(chunk.tolist())
            while len(pending) >= self.batch_size:
                yield pending[: self.batch_size]
                del pending[: self.batch_size]


@dataclass
class MapLoader:
    """`DataPipeline.batches` of a map-style pipeline."""

    dataset: SequenceDataset
    order: MixtureOrder
    batch_size: int
    num_workers: int

    def __call__(self, start: int) -> Iterator[torch.Tensor]:
        sampler = BatchOrder(self.order, self.batch_size, start)
        return iter(
            DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers, collate_fn=torch.stack)
        )


# -- streaming ---------------------------------------------------------------------------------------------------
def shuffle_buffer(items: Iterable[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """Items in a buffered random order: each arriving item replaces a random one of `size` waiting (<= 1: in order)."""
    if size <= 1:
        yield from items
        return
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    yield from (buffer[j] for j in rng.permutation(len(buffer)))


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


@dataclass
class StreamSettings:
    """What a streaming worker needs to make its blocks (pickled into each worker)."""

    sources: list[Source]
    packing: Packing
    seed: int
    shuffle_buffer: int
    workers: int  # W, the logical workers: max(1, num_workers)
    batch_size: int


class StreamDataset(IterableDataset):
    """(batch_size, L) blocks of the stream: logical worker w makes the blocks b >= first_block with b % W == w."""

    def __init__(self, settings: StreamSettings, first_block: int):
        self.settings, self.first_block = settings, first_block

    def __iter__(self) -> Iterator[torch.Tensor]:
        st = self.settings
        info = get_worker_info()
        # DataLoader worker 0 is asked first, so it plays the logical worker that owns the first block.
        worker = ((info.id if info else 0) + self.first_block) % st.workers
        order = MixtureOrder([s.weight for s in st.sources], st.seed)
        streams: dict[int, Iterator[np.ndarray]] = {}
        for block in count(worker, st.workers):
            start = block * st.batch_size
            rows = []
            for s in order.sources(start, start + st.batch_size).tolist():
                if s not in streams:
                    streams[s] = self._sequences(s, worker)
                rows.append(next(streams[s]))
            # Blocks before the start are made (the streams must advance) but not sent.
            if block >= self.first_block:
                yield torch.from_numpy(np.stack(rows).astype(np.int64))

    def _sequences(self, s: int, worker: int) -> Iterator[np.ndarray]:
        source, pk = self.settings.sources[s], self.settings.packing
        if source.kind != "npy":
            yield from pk.sequences(self._passes(s, worker, lambda: pk.documents(source, held_out=False)))
            return
        rows = pk.token_rows(source, held_out=False)
        for j in self._passes(s, worker, lambda: iter(range(len(rows)))):
            row = rows.rows(np.array([j]))[0]
            check_token_ids(row, pk.vocab_size, source.where(), source.key)
            yield row

    def _passes(self, s: int, worker: int, items: Callable[[], Iterator[T]]) -> Iterator[T]:
        """This worker's share of the items, pass after pass, each pass in its own seeded order."""
        st = self.settings
        for epoch in count():
            mine = islice(items(), worker, None, st.workers)
            empty = True
            for item in shuffle_buffer(mine, st.shuffle_buffer, _rng(st.seed, SHUFFLE_STREAM, s, worker, epoch)):
                empty = False
                yield item
            if empty:
                source = st.sources[s]
                share = f" for reader {worker} of {st.workers} (the readers take the documents in turn)"
                raise DataError(
                    f"{source.key}: {source.where()} has no training documents{share if st.workers > 1 else ''}; "
                    "add documents" + (" or lower data.num_workers" if st.workers > 1 else "")
                )


def _rebatch(blocks: Iterable[torch.Tensor], skip: int, batch_size: int) -> Iterator[torch.Tensor]:
    pending = torch.empty(0, dtype=torch.int64)
    for block in blocks:
        pending = torch.cat([pending, block[skip:]]) if len(pending) or skip else block
        skip = 0
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]


@dataclass
class StreamLoader:
    """`DataPipeline.batches` of a streaming pipeline."""

    settings: StreamSettings
    num_workers: int

    def __call__(self, start: int) -> Iterator[torch.Tensor]:
        first_block, skip = divmod(start, self.settings.batch_size)
        dataset = StreamDataset(self.settings, first_block)
        loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers)
        return _rebatch(loader, skip, self.settings.batch_size)


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
