"""Sample orders and batch loaders: the sequence stores, the seeded mixture order, map-style and streaming loading.

Sample `g` of a run is a pure function of (config, g), so `batches(g)` resumes a run exactly. packing.py decides
what the sequences are and builds the stores and settings; this module decides in which order they are read.

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

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count, islice
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from .data import DataError, Source, check_token_ids, token_files

if TYPE_CHECKING:
    from .packing import Packing  # packing.py imports this module; the annotation alone needs the name

T = TypeVar("T")
MIX_BLOCK = 4096  # mixture draws per seeded block
# Distinct seed streams, so that no two uses of training.seed draw the same numbers.
MIX_STREAM, PERMUTATION_STREAM, SHUFFLE_STREAM, DUMMY_STREAM, DUMMY_VALIDATION_STREAM = range(5)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    # SeedSequence takes non-negative ints; training.seed may be negative.
    return np.random.default_rng((seed % 2**64, *stream))


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
