"""The iterators Module.fit and Module.predict consume: ArrayIter (chunked host-to-engine
copies, an optional prefetch thread for memory-mapped inputs) and make_iter; a dist
worker's shard of each epoch (shard_order)."""
from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import mxnet as mx
import numpy as np

from .sources import STREAM_BYTES, is_memmapped, release_pages

if TYPE_CHECKING:  # annotations only
    from ..spec.model import Spec
    from . import Dataset
    from .augment import Augment, EpochAugment


def shard_rows(n: int, num_workers: int) -> int:
    """Rows per worker and epoch: ceil(n / num_workers), the same on every worker."""
    return -(-n // num_workers)


def shard_order(order: np.ndarray, rank: int, num_workers: int) -> np.ndarray:
    """Worker `rank`'s part of an epoch's order (the same permutation on every worker):
    positions rank, rank + W, ... of the order repeated cyclically to ceil(n/W) x W, so
    every worker runs the same number of batches (dist_sync needs that) and the shards
    together cover every row, at most W - 1 rows twice."""
    if num_workers <= 1:
        return order
    return np.resize(order, shard_rows(len(order), num_workers) * num_workers)[rank::num_workers]


CHUNK_BYTES = 8 << 20  # features gathered per host-to-engine copy in ArrayIter
PREFETCH_CHUNKS = 2    # chunks a background thread gathers ahead (memory-mapped inputs)


def _batch_indices(order: np.ndarray, start: int, batch_size: int, shuffle: bool
                   ) -> Tuple[np.ndarray, int]:
    idx = order[start:start + batch_size]
    if shuffle:
        idx = np.sort(idx)  # same batch, read front to back
    pad = batch_size - len(idx)
    if pad:  # the repeats go last: Module.predict strips the last `pad` rows
        idx = np.concatenate([idx, np.resize(order, pad)])  # pad may exceed len(order)
    return idx, pad


def _gather(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.asarray(array[idx], dtype=np.float32)
    if array.nbytes > STREAM_BYTES:  # a large memory-mapped file: keep resident memory bounded
        release_pages(array)
    return out


Chunk = Tuple[List[np.ndarray], np.ndarray, List[int]]  # inputs, labels, pads per batch


def epoch_chunks(inputs: Dict[str, np.ndarray], labels: np.ndarray, order: np.ndarray,
                 batch_size: int, shuffle: bool, start: int = 0,
                 augment: Optional["EpochAugment"] = None) -> Iterator[Chunk]:
    """An epoch's batches from position `start` of `order`, CHUNK_BYTES of them at a time,
    gathered into contiguous float32 arrays: the batches of _batch_indices, made with a few
    numpy calls per chunk (each call is a GIL hand-off when a thread runs this). A pure
    function of its arguments: prefetched or not, the batches are the same.
    `augment` (one image input): the epoch's augmentation, drawn per batch from its index
    in the epoch (data.augment), so it is a pure function too."""
    row_bytes = max(1, sum(int(np.prod(a.shape[1:])) for a in inputs.values()) * 4)
    per_chunk = max(1, CHUNK_BYTES // (row_bytes * batch_size))
    n = len(order)
    while start < n:
        stop = min(n, start + per_chunk * batch_size)
        part = order[start:stop]
        full = (len(part) // batch_size) * batch_size
        pads = [0] * (full // batch_size)
        pieces = [np.sort(part[:full].reshape(-1, batch_size), axis=1).ravel() if shuffle
                  else part[:full]]
        if full < len(part):  # the epoch's last, short batch
            pad = batch_size - (len(part) - full)
            pieces += [np.sort(part[full:]) if shuffle else part[full:],
                       np.resize(order, pad)]  # pad may exceed len(order)
            pads.append(pad)
        idx = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        first_batch, start = start // batch_size, stop
        yield (_chunk_inputs(inputs, idx, augment, first_batch),
               np.asarray(labels[idx], dtype=np.float32), pads)


def _chunk_inputs(inputs: Dict[str, np.ndarray], idx: np.ndarray,
                  augment: Optional["EpochAugment"], first_batch: int) -> List[np.ndarray]:
    if augment is None:
        return [_gather(a, idx) for a in inputs.values()]
    (array,) = inputs.values()  # image sources have one input (images.image_read_options)
    return [augment(None if augment.crops else _gather(array, idx), idx, first_batch)]


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(chunks: Iterator[Chunk], out: "queue.Queue[Any]", stop: threading.Event) -> None:
    """The prefetch thread: gather chunks ahead (numpy releases the GIL while it copies, and
    a memory-mapped file's page faults happen here, not in the training loop)."""
    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
    try:
        for chunk in chunks:
            if stop.is_set() or not put(chunk):
                return
        put(None)
    except BaseException as e:  # handed to the consumer, raised there
        put(_Failure(e))


class _Prefetcher:
    """Runs `chunks` in a daemon thread, `depth` chunks ahead; close() stops it."""

    def __init__(self, chunks: Iterator[Chunk], depth: int) -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_produce, args=(chunks, self._queue, self._stop),
                                        name="symbuilder-prefetch", daemon=True)
        self._thread.start()

    def __next__(self) -> Chunk:
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise item.error
        if item is None:
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a pending put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()


class ArrayIter(mx.io.DataIter):
    """Batches from numpy (or memory-mapped) arrays, in an order fixed by (seed, epoch).

    MXNet's NDArrayIter reshuffles cumulatively, so epoch e's order depends on every earlier
    epoch and a resumed run cannot reproduce it. Here epoch e's order is a permutation drawn
    from (seed, e) alone; within a batch, indices are sorted, so a memory-mapped array is
    read front to back. The last batch is padded from the start of the order (`pad` tells
    how many samples are repeats; Module.predict strips them).
    `on_epoch_start(epoch)` runs before each epoch's first batch: the trainer seeds MXNet's
    RNG there, which makes dropout masks a function of (seed, epoch) too.
    `prefetch` chunks of batches are gathered ahead by a background thread (0: none; None:
    PREFETCH_CHUNKS when an input is memory-mapped, where a gather can wait for the disk,
    else none: gathering from RAM is a memcpy, and a thread would only add GIL hand-offs).
    Within the epoch only: the next epoch's order and its on_epoch_start run at reset(), in
    the caller's thread, as without prefetching. NDArrays are made in the caller's thread.
    `augment`: a training Dataset's data.augment.Augment, applied to every batch as it is
    gathered (its images are opened here, in the caller's thread).
    """

    def __init__(self, inputs: Dict[str, np.ndarray], labels: np.ndarray, *,
                 label_name: str, batch_size: int, shuffle: bool, seed: int = 0,
                 epoch: int = 0, on_epoch_start: Optional[Any] = None,
                 shard: Optional[Tuple[int, int]] = None,
                 prefetch: Optional[int] = None, augment: Optional["Augment"] = None) -> None:
        super().__init__(batch_size)
        self.inputs = inputs
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.on_epoch_start = on_epoch_start
        self.shard = shard  # (rank, num_workers): this worker's rows of each epoch's order
        if prefetch is None:
            disk = any(is_memmapped(a) for a in inputs.values())
            prefetch = PREFETCH_CHUNKS if disk else 0
        self.prefetch = max(0, int(prefetch))
        self.augment = augment
        if augment is not None:
            augment.ready()
        self._source: Optional[Any] = None
        self.provide_data = [mx.io.DataDesc(name, (batch_size,) + array.shape[1:], np.float32)
                             for name, array in inputs.items()]
        self.provide_label = [mx.io.DataDesc(label_name, (batch_size,) + labels.shape[1:],
                                             np.float32)]
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._close_source()
        n = len(self.labels)
        if self.shuffle:
            rng = np.random.RandomState((self.seed * 1_000_003 + self.epoch) % (2 ** 32))
            self._order = rng.permutation(n)
        else:
            self._order = np.arange(n)
        if self.shard is not None:
            self._order = shard_order(self._order, *self.shard)
        self._cursor = 0
        self._chunk_pads: List[int] = []
        self._chunk_pos = 0
        if self.on_epoch_start is not None:
            self.on_epoch_start(self.epoch)

    def _close_source(self) -> None:
        source, self._source = getattr(self, "_source", None), None
        if isinstance(source, _Prefetcher):
            source.close()

    def close(self) -> None:
        """Stop the prefetch thread (also done by reset() and when the iterator is freed)."""
        self._close_source()

    def __del__(self) -> None:
        try:
            self._close_source()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def reset(self) -> None:
        self.epoch += 1
        self._start_epoch()

    def __iter__(self) -> "ArrayIter":
        return self

    def __next__(self) -> Any:
        return self.next()

    def _batch_indices(self, start: int) -> Tuple[np.ndarray, int]:
        return _batch_indices(self._order, start, self.batch_size, self.shuffle)

    def _load_chunk(self) -> None:
        """The next CHUNK_BYTES of batches as one NDArray per input: one host-to-engine copy
        per chunk instead of per batch (each mx.nd.array call costs ~0.5 ms)."""
        if self._source is None:
            augment = None if self.augment is None else self.augment.for_epoch(
                self.epoch, self.batch_size, self.shard[0] if self.shard else 0)
            chunks = epoch_chunks(self.inputs, self.labels, self._order, self.batch_size,
                                  self.shuffle, start=self._cursor, augment=augment)
            self._source = _Prefetcher(chunks, self.prefetch) if self.prefetch else chunks
        data, label, pads = next(self._source)
        self._chunk_data = [mx.nd.array(d, dtype=np.float32) for d in data]
        self._chunk_label = mx.nd.array(label, dtype=np.float32)
        self._chunk_label_host = np.asarray(label, dtype=np.float32)
        self._chunk_pads = pads
        self._chunk_pos = 0

    def next(self) -> Any:
        if self._cursor >= len(self._order):
            self._close_source()
            raise StopIteration
        if self._chunk_pos >= len(self._chunk_pads):
            self._load_chunk()
        k = self._chunk_pos
        lo, hi = k * self.batch_size, (k + 1) * self.batch_size
        self._chunk_pos += 1
        self._cursor += self.batch_size
        batch = mx.io.DataBatch(data=[d[lo:hi] for d in self._chunk_data],
                                label=[self._chunk_label[lo:hi]],
                                pad=self._chunk_pads[k], provide_data=self.provide_data,
                                provide_label=self.provide_label)
        # The same labels in host memory, for the training metrics (no engine read-back).
        batch.host_label = self._chunk_label_host[lo:hi]
        return batch


def labels_for(spec: Spec, dataset: Dataset) -> np.ndarray:
    """Labels shaped as the head expects: (N,) for SoftmaxOutput, (N, k) for regression."""
    if spec.output.op == "SoftmaxOutput":
        return dataset.labels
    return dataset.labels.reshape(len(dataset.labels), -1)


def make_iter(spec: Spec, dataset: Dataset, *, batch_size: int, shuffle: bool, epoch: int = 0,
              on_epoch_start: Optional[Any] = None,
              shard: Optional[Tuple[int, int]] = None,
              prefetch: Optional[int] = None) -> ArrayIter:
    """The iterator Module.fit and Module.predict consume, named as the symbol's variables.
    `shard=(rank, num_workers)`: a dist worker's rows of every epoch (see shard_order).
    `prefetch`: chunks gathered ahead in a background thread (0: none; None: when an input
    is memory-mapped). The dataset's augmentation (rand_crop, rand_mirror) applies to the
    shuffled iterator only, the one training consumes; evaluation never sees it."""
    return ArrayIter(dataset.inputs, labels_for(spec, dataset), label_name=spec.output.label_name, batch_size=batch_size, shuffle=shuffle,
                     seed=spec.train.seed, epoch=epoch, on_epoch_start=on_epoch_start,
                     shard=shard, prefetch=prefetch,
                     augment=dataset.augment if shuffle else None)
